//! The store in LMDB (through heed): one environment per data directory, one database
//! per table, values encoded with cbor4ii by the typed layer above.
//!
//! LMDB gives what the chain needs: a write transaction commits atomically or not at
//! all, even if the process is killed mid-way, and opening the store reads nothing but
//! the tip, so start-up time does not grow with the chain.

use std::ops::Bound;
use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};

use super::{KeyRange, ReadTables, Store, StoreError, Table, WriteTables};

/// Upper bound of the memory map; the file only grows as data is written.
const MAP_SIZE: usize = 64 << 30;

/// An LMDB environment with one database per [`Table`].
pub struct LmdbStore {
    env: Env<WithoutTls>,
    databases: [Database<'static, Bytes, Bytes>; Table::ALL.len()],
}

impl LmdbStore {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(MAP_SIZE).max_dbs(Table::ALL.len() as u32).max_readers(126);
        // NO_META_SYNC: one fsync per commit instead of two. A power failure may lose
        // the last commit but never leaves a half-written one; a killed process loses
        // nothing.
        // SAFETY: the flag is a documented LMDB option with no memory-safety impact.
        unsafe { options.flags(EnvFlags::NO_META_SYNC) };
        // SAFETY: heed requires that the environment is not opened twice in one process
        // and that the file is not modified outside LMDB; the node opens its data
        // directory once, and heed itself refuses a second open of the same path.
        let env = unsafe { options.open(path)? };
        let created = env
            .create_databases_and_commit(
                env.write_txn()?,
                |opener, txn| -> Result<_, heed::Error> {
                    let databases = Table::ALL.map(|table| {
                        opener.create_database::<Bytes, Bytes>(txn, Some(table.name()))
                    });
                    Ok(CommitOrAbort::<_, ()>::Commit(databases))
                },
            )?
            .commit()
            .expect("the closure always commits");
        let mut databases = Vec::with_capacity(created.len());
        for database in created {
            databases.push(database?);
        }
        let databases =
            databases.try_into().unwrap_or_else(|_| unreachable!("one database per table"));
        Ok(Self { env, databases })
    }

    fn database(&self, table: Table) -> Database<'static, Bytes, Bytes> {
        self.databases[Table::ALL.iter().position(|t| *t == table).expect("every table is in ALL")]
    }
}

/// A read transaction.
pub struct LmdbReader<'a> {
    store: &'a LmdbStore,
    txn: RoTxn<'a, WithoutTls>,
}

/// The write transaction.
pub struct LmdbWriter<'a> {
    store: &'a LmdbStore,
    txn: RwTxn<'a>,
}

fn get(
    store: &LmdbStore,
    txn: &RoTxn<'_, WithoutTls>,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(store.database(table).get(txn, key)?.map(<[u8]>::to_vec))
}

fn scan(
    store: &LmdbStore,
    txn: &RoTxn<'_, WithoutTls>,
    table: Table,
    range: KeyRange<'_>,
    reverse: bool,
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StoreError> {
    let database = store.database(table);
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = range;
    if reverse {
        for item in database.rev_range(txn, &bounds)? {
            let (key, value) = item?;
            if !visit(key, value) {
                break;
            }
        }
    } else {
        for item in database.range(txn, &bounds)? {
            let (key, value) = item?;
            if !visit(key, value) {
                break;
            }
        }
    }
    Ok(())
}

/// Both transaction kinds read the same way (a write transaction derefs to a read one).
macro_rules! read_tables {
    ($txn:ty) => {
        impl ReadTables for $txn {
            fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                get(self.store, &self.txn, table, key)
            }

            fn scan(
                &self,
                table: Table,
                range: KeyRange<'_>,
                reverse: bool,
                visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
            ) -> Result<(), StoreError> {
                scan(self.store, &self.txn, table, range, reverse, visit)
            }
        }
    };
}

read_tables!(LmdbReader<'_>);
read_tables!(LmdbWriter<'_>);

impl WriteTables for LmdbWriter<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Ok(self.store.database(table).put(&mut self.txn, key, value)?)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError> {
        self.store.database(table).delete(&mut self.txn, key)?;
        Ok(())
    }

    fn commit(self) -> Result<(), StoreError> {
        Ok(self.txn.commit()?)
    }
}

impl Store for LmdbStore {
    type Reader<'a> = LmdbReader<'a>;
    type Writer<'a> = LmdbWriter<'a>;

    fn reader(&self) -> Result<LmdbReader<'_>, StoreError> {
        Ok(LmdbReader { store: self, txn: self.env.read_txn()? })
    }

    fn writer(&self) -> Result<LmdbWriter<'_>, StoreError> {
        Ok(LmdbWriter { store: self, txn: self.env.write_txn()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_committed_and_aborted_writes_when_reopened_then_only_committed_remain() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LmdbStore::open(dir.path()).unwrap();
            let mut writer = store.writer().unwrap();
            writer.put(Table::Meta, b"kept", b"1").unwrap();
            writer.commit().unwrap();
            let mut writer = store.writer().unwrap();
            writer.put(Table::Meta, b"lost", b"2").unwrap();
            drop(writer);
        }
        let store = LmdbStore::open(dir.path()).unwrap();
        let reader = store.reader().unwrap();
        assert_eq!(reader.get(Table::Meta, b"kept").unwrap(), Some(b"1".to_vec()));
        assert_eq!(reader.get(Table::Meta, b"lost").unwrap(), None);
        let mut seen = Vec::new();
        reader
            .scan(Table::Meta, (Bound::Unbounded, Bound::Unbounded), false, &mut |k, _| {
                seen.push(k.to_vec());
                true
            })
            .unwrap();
        assert_eq!(seen, vec![b"kept".to_vec()]);
    }
}
