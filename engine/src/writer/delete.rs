//! Deletes: tombstones and the removal of ids from the catalog, in one commit.

use std::collections::HashSet;

use tessera_storage::ExternalId;
use tessera_storage::catalog::CatalogBatch;

use super::tombstones::NewTombstones;
use crate::collection::Collection;
use crate::error::Result;
use crate::snapshot::SnapshotInner;

/// What a delete removed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeleteReport {
    /// Documents deleted.
    pub deleted: usize,
    /// Ids that were not in the collection.
    pub missing: Vec<ExternalId>,
}

impl Collection {
    /// Deletes documents by id, atomically and durably. Unknown ids are reported, not errors.
    pub fn delete(&self, ids: &[ExternalId]) -> Result<DeleteReport> {
        let report = {
            self.db.check_writable()?;
            let _w = self.db.writer.lock();
            self.check_live()?;
            let coll = self.state.record.id;
            let unique: Vec<ExternalId> = {
                let mut seen = HashSet::new();
                ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
            };
            let locs = self.db.catalog.locations(coll, &unique)?;
            self.run_commit(|plan| {
                let mut tombstones = NewTombstones::default();
                let mut batch = CatalogBatch::default();
                let mut report = DeleteReport::default();
                for (id, loc) in unique.iter().zip(&locs) {
                    let marked = match loc {
                        Some(loc) => {
                            let corrupt = |key, reason| self.corrupt_record(key, reason);
                            let segs = &plan.old.segments;
                            tombstones.mark(segs, id, loc, &mut plan.manifest, corrupt)?
                        }
                        None => None,
                    };
                    match marked {
                        None => {
                            report.missing.push(id.clone());
                            continue;
                        }
                        Some(true) => report.deleted += 1,
                        Some(false) => {}
                    }
                    batch.delete_location(coll, id);
                    batch.delete_metadata(coll, id);
                    batch.delete_text(coll, id);
                }
                if report.deleted > 0 {
                    tombstones.write(&mut batch, coll)?;
                    plan.manifest.commits += 1;
                    plan.commit(&self.db, &self.state, batch)?;
                }
                let snapshot = SnapshotInner {
                    codec: plan.old.codec.clone(),
                    segments: tombstones.apply(&plan.old.segments),
                };
                Ok((report, snapshot))
            })?
        };
        if report.deleted > 0 {
            self.merge_in_background_if_due();
        }
        Ok(report)
    }
}
