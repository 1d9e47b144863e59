//! The README as a contract: every `just …`, `cargo …`, `raclette-node …` and
//! `raclette-tracker …` it tells users to type names recipes, binaries, subcommands,
//! flags, packages and benchmarks that exist, and every `RACLETTE_*` variable it names is
//! one a binary reads. A README that drifts from the code fails a test instead of a user.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A command found in the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadmeCommand {
    /// 1-based line of the README.
    pub line: usize,
    /// The heading it appears under.
    pub section: String,
    /// The command, as typed.
    pub text: String,
    /// Whether it is in a fenced code block (not an inline code span).
    pub in_block: bool,
}

/// The commands the README shows: lines of fenced code blocks (and the commands in
/// their `# …` comments, such as `# or: just demo`) and inline code spans that start
/// with `just`, `cargo` or one of our binaries, or with a `--flag`.
pub fn commands(readme: &str) -> Vec<ReadmeCommand> {
    let mut found = Vec::new();
    let mut section = String::new();
    let mut in_block = false;
    let mut continued: Option<(usize, String)> = None;
    for (index, line) in readme.lines().enumerate() {
        let number = index + 1;
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            // A command continued with `\` is one command.
            let (start, mut text) = continued.take().unwrap_or((number, String::new()));
            text.push_str(line.trim_end().trim_end_matches('\\'));
            if line.trim_end().ends_with('\\') {
                continued = Some((start, text + " "));
                continue;
            }
            for part in text.split('#') {
                let part = part.trim();
                let part = part.strip_prefix("or:").map_or(part, str::trim);
                if is_command(part) {
                    found.push(ReadmeCommand {
                        line: start,
                        section: section.clone(),
                        text: part.to_string(),
                        in_block: true,
                    });
                }
            }
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            section = heading.trim_start_matches('#').trim().to_string();
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            let span = span.trim();
            if is_command(span) || span.starts_with("--") {
                found.push(ReadmeCommand {
                    line: number,
                    section: section.clone(),
                    text: span.to_string(),
                    in_block: false,
                });
            }
        }
    }
    found
}

fn is_command(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or_default();
    matches!(first, "just" | "cargo" | NODE | TRACKER)
}

const NODE: &str = "raclette-node";
const TRACKER: &str = "raclette-tracker";

/// The programs whose flags a recipe passes its arguments on to.
const RECIPE_PROGRAMS: &[(&str, &[&str])] =
    &[("tracker", &[TRACKER]), ("node", &[NODE]), ("demo", &[NODE, "demo"])];

/// A `just` recipe's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// Arguments it cannot do without.
    pub required: usize,
    /// Arguments it takes at most; `None` when the last is variadic.
    pub most: Option<usize>,
}

/// What the commands are checked against.
pub trait Reference {
    /// The recipe called `name`, if the Justfile has it.
    fn recipe(&self, name: &str) -> Option<Recipe>;
    /// The `--help` text of a program (`["raclette-node", "demo"]`, `["cargo", "run"]`),
    /// or `None` when there is no such program or subcommand.
    fn help(&self, program: &[&str]) -> Option<String>;
    /// The workspace's packages.
    fn packages(&self) -> Vec<String>;
    /// The benchmarks `just bench NAME` and `cargo bench --bench NAME` can run.
    fn benches(&self) -> Vec<String>;
    /// Whether the tests themselves read the environment variable `name` (a switch such
    /// as `RACLETTE_SKIP_NETNS`).
    fn read_by_tests(&self, name: &str) -> bool;
}

/// Every problem with the README's commands and variables, one line each, with the
/// README line it is on.
pub fn check(readme: &str, reference: &impl Reference) -> Vec<String> {
    let mut problems = Vec::new();
    for command in commands(readme) {
        let words = shell_words::split(&command.text)
            .unwrap_or_else(|_| command.text.split_whitespace().map(str::to_string).collect());
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let found = match words.first().copied() {
            Some("just") => check_just(&words[1..], reference),
            Some("cargo") => check_cargo(&words[1..], reference),
            Some(program @ (NODE | TRACKER)) => check_program(&[program], &words[1..], reference),
            _ => check_section_flags(&command.section, &words, reference),
        };
        problems.extend(
            found.into_iter().map(|problem| {
                format!("README line {}: `{}`: {problem}", command.line, command.text)
            }),
        );
    }
    problems.extend(check_variables(readme, reference));
    problems
}

fn check_just(words: &[&str], reference: &impl Reference) -> Vec<String> {
    let Some((&name, arguments)) = words.split_first() else {
        return Vec::new(); // `just` alone lists the recipes
    };
    let Some(recipe) = reference.recipe(name) else {
        return vec![format!("the Justfile has no recipe `{name}`")];
    };
    let mut problems = Vec::new();
    if arguments.len() < recipe.required {
        problems.push(format!("recipe `{name}` needs {} argument(s)", recipe.required));
    }
    if recipe.most.is_some_and(|most| arguments.len() > most) {
        problems.push(format!("recipe `{name}` takes at most {:?} argument(s)", recipe.most));
    }
    if name == "bench"
        && let Some(bench) = arguments.first()
        && *bench != "all"
        && !reference.benches().iter().any(|known| known == bench)
    {
        problems.push(format!("there is no benchmark `{bench}`"));
    }
    if let Some((_, program)) = RECIPE_PROGRAMS.iter().find(|(recipe, _)| *recipe == name) {
        let flags_from = arguments.iter().position(|word| word.starts_with('-'));
        problems.extend(check_program(
            program,
            &arguments[flags_from.unwrap_or(arguments.len())..],
            reference,
        ));
    }
    problems
}

fn check_cargo(words: &[&str], reference: &impl Reference) -> Vec<String> {
    let Some((&subcommand, rest)) = words.split_first() else { return Vec::new() };
    let Some(help) = reference.help(&["cargo", subcommand]) else {
        return vec![format!("`cargo {subcommand}` is not a cargo command here")];
    };
    let (ours, theirs) = match rest.iter().position(|word| *word == "--") {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let mut problems = missing_flags(ours, &help, &format!("cargo {subcommand}"));
    let mut binary = None;
    for pair in ours.windows(2) {
        let known = match pair[0] {
            "--bin" => {
                binary = Some(pair[1]);
                vec![NODE.to_string(), TRACKER.to_string()]
            }
            "-p" | "--package" => reference.packages(),
            "--bench" => reference.benches(),
            _ => continue,
        };
        if !known.iter().any(|name| name == pair[1]) {
            problems.push(format!("`{} {}` names nothing in the workspace", pair[0], pair[1]));
        }
    }
    if let (Some(binary), Some(arguments)) = (binary, theirs) {
        problems.extend(check_program(&[binary], arguments, reference));
    }
    problems
}

/// Checks the arguments given to one of our binaries: a leading word must be one of its
/// subcommands, and every flag one it (or that subcommand) takes.
fn check_program(program: &[&str], arguments: &[&str], reference: &impl Reference) -> Vec<String> {
    let mut program = program.to_vec();
    let mut arguments = arguments;
    if let Some((&first, rest)) = arguments.split_first()
        && !first.starts_with('-')
        && !first.starts_with('[')
    {
        program.push(first);
        arguments = rest;
    }
    match reference.help(&program) {
        Some(help) => missing_flags(arguments, &help, &program.join(" ")),
        None => vec![format!("`{}` does not exist", program.join(" "))],
    }
}

/// A span that is only flags (`--name NAME`, a row of a flags table): they belong to the
/// binary the section is about, or to either when the section names neither.
fn check_section_flags(section: &str, words: &[&str], reference: &impl Reference) -> Vec<String> {
    let programs: Vec<&str> =
        [NODE, TRACKER].into_iter().filter(|program| section.contains(program)).collect();
    let programs = if programs.is_empty() { vec![NODE, TRACKER] } else { programs };
    let helps: Vec<String> =
        programs.iter().filter_map(|program| reference.help(&[program])).collect();
    flags(words)
        .filter(|flag| !helps.iter().any(|help| mentions(help, flag)))
        .map(|flag| format!("no flag `{flag}` in {}", programs.join(" or ")))
        .collect()
}

fn missing_flags(words: &[&str], help: &str, program: &str) -> Vec<String> {
    flags(words)
        .filter(|flag| !mentions(help, flag))
        .map(|flag| format!("`{program}` has no flag `{flag}`"))
        .collect()
}

/// The flags among `words`: `--long` (without `=value`) and short `-p`, with the
/// brackets of a usage line (`[--data DIR]...`) taken off.
fn flags<'a>(words: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    words.iter().filter_map(|word| {
        let word = word.trim_start_matches('[').trim_end_matches(['.', ']', ',', ')']);
        let name = word.split('=').next().unwrap_or_default();
        let is_long = name.len() > 2
            && name.starts_with("--")
            && name[2..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let is_short = name.len() == 2
            && name.starts_with('-')
            && name.chars().nth(1).is_some_and(|c| c.is_ascii_alphabetic());
        (is_long || is_short).then(|| name.to_string())
    })
}

/// Whether `help` names `flag` as a whole word (`--data` is not found in `--data-dir`).
fn mentions(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Every `RACLETTE_*` environment variable the README names must be read by a binary
/// (clap lists them in `--help` as `[env: NAME=]`) or by the tests.
fn check_variables(readme: &str, reference: &impl Reference) -> Vec<String> {
    let helps: Vec<String> =
        [NODE, TRACKER].iter().filter_map(|program| reference.help(&[program])).collect();
    let mut problems = Vec::new();
    for (index, line) in readme.lines().enumerate() {
        for (at, _) in line.match_indices("RACLETTE_") {
            let name: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !helps.iter().any(|help| help.contains(&format!("[env: {name}=")))
                && !reference.read_by_tests(&name)
            {
                problems.push(format!(
                    "README line {}: no binary reads the environment variable {name}",
                    index + 1
                ));
            }
        }
    }
    problems
}

/// The real thing: the Justfile through `just`, the binaries' and cargo's `--help`.
pub struct Workspace {
    root: PathBuf,
    binaries: HashMap<&'static str, PathBuf>,
    recipes: HashMap<String, Recipe>,
    helps: RefCell<HashMap<Vec<String>, Option<String>>>,
}

impl Workspace {
    /// Reads the Justfile at `root` with `just` (which must be installed) and takes the
    /// binaries to ask for `--help` from `node` and `tracker`.
    pub fn new(root: &Path, node: &Path, tracker: &Path) -> Result<Self, String> {
        let output = Command::new("just")
            .arg("--justfile")
            .arg(root.join("Justfile"))
            .args(["--dump", "--dump-format", "json"])
            .output()
            .map_err(|error| format!("cannot run just: {error}"))?;
        if !output.status.success() {
            return Err(format!("just --dump: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let dump: Value = serde_json::from_slice(&output.stdout)
            .map_err(|error| format!("just --dump is not JSON: {error}"))?;
        let recipes = dump["recipes"]
            .as_object()
            .ok_or("just --dump has no recipes")?
            .iter()
            .map(|(name, recipe)| (name.clone(), recipe_of(recipe)))
            .collect();
        Ok(Self {
            root: root.to_path_buf(),
            binaries: HashMap::from([(NODE, node.to_path_buf()), (TRACKER, tracker.to_path_buf())]),
            recipes,
            helps: RefCell::default(),
        })
    }
}

fn recipe_of(recipe: &Value) -> Recipe {
    let parameters = recipe["parameters"].as_array().cloned().unwrap_or_default();
    let required = parameters
        .iter()
        .filter(|p| p["kind"] == "singular" && p["default"].is_null() || p["kind"] == "plus")
        .count();
    let variadic = parameters.iter().any(|p| p["kind"] != "singular");
    Recipe { required, most: (!variadic).then_some(parameters.len()) }
}

impl Reference for Workspace {
    fn recipe(&self, name: &str) -> Option<Recipe> {
        self.recipes.get(name).copied()
    }

    fn help(&self, program: &[&str]) -> Option<String> {
        let key: Vec<String> = program.iter().map(|word| word.to_string()).collect();
        self.helps
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                let (&first, rest) = program.split_first()?;
                let mut command = match self.binaries.get(first) {
                    Some(path) => Command::new(path),
                    None if first == "cargo" => Command::new(env!("CARGO")),
                    None => return None,
                };
                let output = command.args(rest).arg("--help").output().ok()?;
                output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into())
            })
            .clone()
    }

    fn packages(&self) -> Vec<String> {
        ["protocol", "node", "rendezvous-tracker", "integration-tests"]
            .iter()
            .filter_map(|dir| std::fs::read_to_string(self.root.join(dir).join("Cargo.toml")).ok())
            .filter_map(|manifest| {
                let line = manifest.lines().find(|line| line.starts_with("name = "))?;
                Some(line.trim_start_matches("name = ").trim_matches('"').to_string())
            })
            .collect()
    }

    fn read_by_tests(&self, name: &str) -> bool {
        let quoted = format!("\"{name}\"");
        let dir = self.root.join("integration-tests/tests");
        std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
            std::fs::read_to_string(entry.path()).is_ok_and(|text| text.contains(&quoted))
        })
    }

    fn benches(&self) -> Vec<String> {
        let dir = self.root.join("integration-tests/benches");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace with recipes `node NAME *ARGS` and `bench NAME="all"`, a node that
    /// takes `--name`, `--tracker` and the subcommand `demo`, and cargo's `run`.
    struct Fake;

    impl Reference for Fake {
        fn recipe(&self, name: &str) -> Option<Recipe> {
            match name {
                "node" => Some(Recipe { required: 1, most: None }),
                "bench" => Some(Recipe { required: 0, most: Some(1) }),
                _ => None,
            }
        }

        fn help(&self, program: &[&str]) -> Option<String> {
            match program {
                [NODE] => Some("--name <NAME>  [env: RACLETTE_NAME=]\n--tracker <T>".into()),
                [NODE, "demo"] => Some("--threads <N>".into()),
                [TRACKER] => Some("--data <DIR>".into()),
                ["cargo", "run"] => Some("--release\n--bin [<NAME>]\n-p, --package".into()),
                _ => None,
            }
        }

        fn packages(&self) -> Vec<String> {
            vec!["raclette-node".into()]
        }

        fn benches(&self) -> Vec<String> {
            vec!["pow".into()]
        }

        fn read_by_tests(&self, name: &str) -> bool {
            name == "RACLETTE_SKIP_NETNS"
        }
    }

    const GOOD: &str = "# Title\n\
        ```sh\n\
        cargo run --release --bin raclette-node -- demo --threads 1   # or: just node alice\n\
        just node bob --tracker /ip4/1.2.3.4/tcp/7000 \\\n    --name bob\n\
        ```\n\
        ### raclette-node\n\
        | `--name NAME` | your name (`RACLETTE_NAME`) |\n\
        Run `just bench pow` or `raclette-tracker [--data DIR]`.\n";

    #[test]
    fn given_the_commands_in_blocks_comments_and_spans_then_all_are_found() {
        let texts: Vec<String> = commands(GOOD).into_iter().map(|c| c.text).collect();
        assert_eq!(
            texts,
            [
                "cargo run --release --bin raclette-node -- demo --threads 1",
                "just node alice",
                "just node bob --tracker /ip4/1.2.3.4/tcp/7000      --name bob",
                "--name NAME",
                "just bench pow",
                "raclette-tracker [--data DIR]",
            ]
        );
    }

    #[test]
    fn given_a_readme_that_matches_the_workspace_then_no_problems() {
        assert_eq!(check(GOOD, &Fake), Vec::<String>::new());
    }

    #[test]
    fn given_each_kind_of_drift_then_each_is_reported_with_its_line() {
        let cases = [
            ("```\njust nodes alice\n```", "no recipe `nodes`"),
            ("```\njust node\n```", "needs 1 argument(s)"),
            ("```\njust bench pow extra\n```", "takes at most"),
            ("Run `just bench nope`.", "no benchmark `nope`"),
            ("```\njust node alice --nmae x\n```", "`raclette-node` has no flag `--nmae`"),
            ("```\ncargo runn\n```", "not a cargo command"),
            ("```\ncargo run --relase\n```", "`cargo run` has no flag `--relase`"),
            ("```\ncargo run --bin raclette-nod\n```", "`--bin raclette-nod` names nothing"),
            ("```\ncargo run -p raclette-nodes\n```", "`-p raclette-nodes` names nothing"),
            ("```\ncargo run --bin raclette-node -- demoo\n```", "`raclette-node demoo` does not"),
            ("```\ncargo run --bin raclette-node -- demo --name x\n```", "no flag `--name`"),
            ("`raclette-tracker --name x`", "`raclette-tracker` has no flag `--name`"),
            ("### raclette-tracker\n| `--tracker T` |", "no flag `--tracker` in raclette-tracker"),
            ("set RACLETTE_NAMES", "environment variable RACLETTE_NAMES"),
            ("set RACLETTE_SKIP_NETNSS=1", "environment variable RACLETTE_SKIP_NETNSS"),
        ];
        for (readme, expected) in cases {
            let problems = check(readme, &Fake);
            assert_eq!(problems.len(), 1, "{readme}: {problems:?}");
            assert!(problems[0].contains(expected), "{readme}: {problems:?}");
            assert!(problems[0].starts_with("README line "), "{problems:?}");
        }
    }

    #[test]
    fn given_a_flag_that_only_prefixes_another_then_it_is_not_mentioned() {
        assert!(mentions("--data-dir <D>", "--data-dir"));
        assert!(!mentions("--data-dir <D>", "--data"));
        assert!(mentions("-p, --package", "-p"));
    }
}
