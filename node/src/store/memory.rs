//! An in-memory store for unit tests, with the same transaction semantics as LMDB:
//! a writer's changes vanish unless it commits.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{KeyRange, ReadTables, Store, StoreError, Table, WriteTables};

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Tables in memory behind one lock.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic in a test while holding the lock leaves plain maps behind; they are
        // still usable.
        self.tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads and writes hold the lock for their lifetime, like LMDB's single writer.
pub struct MemoryTxn<'a> {
    tables: MutexGuard<'a, Tables>,
    /// Previous values of every key this transaction changed, first change first, so
    /// dropping without commit can put them back.
    rollback: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    committed: bool,
}

impl ReadTables for MemoryTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables.get(&table).and_then(|t| t.get(key)).cloned())
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let Some(entries) = self.tables.get(&table) else { return Ok(()) };
        let range = entries.range::<[u8], _>(range);
        if reverse {
            for (key, value) in range.rev() {
                if !visit(key, value) {
                    break;
                }
            }
        } else {
            for (key, value) in range {
                if !visit(key, value) {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl WriteTables for MemoryTxn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let old = self.tables.entry(table).or_default().insert(key.to_vec(), value.to_vec());
        self.rollback.push((table, key.to_vec(), old));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError> {
        let old = self.tables.entry(table).or_default().remove(key);
        self.rollback.push((table, key.to_vec(), old));
        Ok(())
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.committed = true;
        Ok(())
    }
}

impl Drop for MemoryTxn<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (table, key, old) in self.rollback.drain(..).rev() {
            let entries = self.tables.entry(table).or_default();
            match old {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
    }
}

impl Store for MemoryStore {
    type Reader<'a> = MemoryTxn<'a>;
    type Writer<'a> = MemoryTxn<'a>;

    fn reader(&self) -> Result<MemoryTxn<'_>, StoreError> {
        Ok(MemoryTxn { tables: self.lock(), rollback: Vec::new(), committed: true })
    }

    fn writer(&self) -> Result<MemoryTxn<'_>, StoreError> {
        Ok(MemoryTxn { tables: self.lock(), rollback: Vec::new(), committed: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_writer_dropped_without_commit_then_nothing_changed() {
        let store = MemoryStore::new();
        let mut writer = store.writer().unwrap();
        writer.put(Table::Meta, b"a", b"1").unwrap();
        writer.commit().unwrap();
        let mut writer = store.writer().unwrap();
        writer.put(Table::Meta, b"a", b"2").unwrap();
        writer.put(Table::Meta, b"b", b"3").unwrap();
        writer.delete(Table::Meta, b"a").unwrap();
        assert_eq!(writer.get(Table::Meta, b"b").unwrap(), Some(b"3".to_vec()));
        drop(writer);
        let reader = store.reader().unwrap();
        assert_eq!(reader.get(Table::Meta, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(reader.get(Table::Meta, b"b").unwrap(), None);
    }
}
