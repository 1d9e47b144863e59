//! A process importing blocks into LMDB is killed with SIGKILL at random moments, in
//! turn while it imports them one by one (as gossip brings them) and in batches (as
//! sync does, with the signature checks running ahead on other threads); every time, the
//! store opens and its tip, blocks and balances agree with a full replay of its best
//! chain.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use raclette_node::chain::Chain;
use raclette_node::store::{LmdbStore, MemoryStore, ReadTables, Store, Table};
use raclette_node::testkit::{easy_params, scripted_blocks};

const CHILD_ENV: &str = "RACLETTE_CRASH_CHILD_DIR";
/// Blocks per import in the child: 1 for `import_block`, more for `import_blocks`.
const BATCH_ENV: &str = "RACLETTE_CRASH_CHILD_BATCH";
const NOW: u64 = raclette_protocol::params::GENESIS_TIME_MS + 1_000_000_000;
const KILLS: usize = 25;
/// Blocks per import in the batch runs: a sync batch of this test's small chain.
const BATCH: usize = 40;

/// Where the parent leaves the scripted blocks for the child, next to the store.
fn blocks_file(dir: &Path) -> std::path::PathBuf {
    dir.join("scripted-blocks.cbor")
}

/// The child process's work: import every scripted block into the store in
/// `$RACLETTE_CRASH_CHILD_DIR`, one transaction for each block or for each batch of
/// `$RACLETTE_CRASH_CHILD_BATCH`. Run only by the test below.
#[test]
#[ignore = "entry point of the child process of given_import_killed_at_random_moments"]
fn crash_child() {
    let dir = std::env::var_os(CHILD_ENV).expect("run by the crash test with its data dir");
    let dir = Path::new(&dir);
    let bytes = std::fs::read(blocks_file(dir)).unwrap();
    let blocks: Vec<raclette_protocol::Block> = cbor4ii::serde::from_slice(&bytes).unwrap();
    let mut chain =
        Chain::open(LmdbStore::open(&dir.join("store")).unwrap(), easy_params(), None).unwrap();
    // Tell the parent the slow start-up is over, so its kill lands during the imports.
    println!("ready");
    let batch: usize = std::env::var(BATCH_ENV).unwrap().parse().unwrap();
    if batch == 1 {
        for block in blocks {
            chain.import_block(block, NOW).unwrap();
        }
    } else {
        // As sync does: only blocks the store lacks.
        let missing: Vec<_> = blocks
            .into_iter()
            .filter(|block| chain.block(&block.hash()).unwrap().is_none())
            .collect();
        for batch in missing.chunks(batch) {
            let (_, failure) = chain.import_blocks(batch.to_vec(), NOW);
            assert!(failure.is_none(), "{failure:?}");
        }
    }
}

fn table(store: &impl Store, table: Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    let reader = store.reader().unwrap();
    let mut rows = Vec::new();
    reader
        .scan(
            table,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
            &mut |k, v| {
                rows.push((k.to_vec(), v.to_vec()));
                true
            },
        )
        .unwrap();
    rows
}

/// Opens the store and checks it against a replay of its own best chain.
fn check_consistent(dir: &Path) -> u64 {
    let chain = Chain::open(LmdbStore::open(&dir.join("store")).unwrap(), easy_params(), None)
        .expect("store opens after a kill");
    let tip = chain.tip().clone();
    let mut best =
        chain.blocks_down_from(tip.height(), usize::MAX).expect("every best-chain block is stored");
    assert_eq!(best.len() as u64, tip.height() + 1);
    assert_eq!(best[0].0.hash(), tip.hash());
    best.reverse();
    let mut replay = Chain::open(MemoryStore::new(), easy_params(), None).unwrap();
    for (_, block) in best.into_iter().skip(1) {
        replay.import_block(block, NOW).unwrap();
    }
    assert_eq!(replay.tip().hash(), tip.hash());
    assert_eq!(
        table(replay.store(), Table::Accounts),
        table(chain.store(), Table::Accounts),
        "balances agree"
    );
    assert_eq!(
        table(replay.store(), Table::TxIndex),
        table(chain.store(), Table::TxIndex),
        "tx index agrees"
    );
    tip.height()
}

#[test]
fn given_import_killed_at_random_moments_then_store_always_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let expected = scripted_blocks(120, 30, 60);
    std::fs::write(
        blocks_file(dir.path()),
        raclette_protocol::encoding::to_canonical_cbor(&expected),
    )
    .unwrap();
    let final_tip = expected.last().unwrap().hash();
    let exe = std::env::current_exe().unwrap();
    let child = |batch: usize| {
        Command::new(&exe)
            .args(["--ignored", "--exact", "crash_child", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .env(BATCH_ENV, batch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut heights = Vec::new();
    for kill in 0..KILLS {
        let mut process = child(if kill % 2 == 0 { 1 } else { BATCH });
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                break;
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 12_000));
        process.kill().unwrap(); // SIGKILL on Unix
        process.wait().unwrap();
        heights.push(check_consistent(dir.path()));
    }
    // Finally let it finish: it must reach the scripted tip from wherever it was.
    let status = child(BATCH).wait().unwrap();
    assert!(status.success());
    check_consistent(dir.path());
    let chain =
        Chain::open(LmdbStore::open(&dir.path().join("store")).unwrap(), easy_params(), None)
            .unwrap();
    assert_eq!(chain.tip().hash(), final_tip);
    eprintln!("tip heights after each kill: {heights:?}");
}
