//! `verify`: reads every chunk the chosen backups refer to, checks it against its hash, and
//! names every backup, disk and offset a bad or missing chunk affects.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::chunk::ChunkHash;
use crate::error::Result;
use crate::lock;
use crate::manifest::Manifest;
use crate::store::{PackFiles, Store};

/// One place a chunk is used.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkRef {
    pub backup: String,
    pub vm: String,
    pub disk: String,
    pub offset: u64,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkProblem {
    pub hash: String,
    /// What is wrong ("is missing ...", "content does not match its hash ...").
    pub problem: String,
    pub used_by: Vec<ChunkRef>,
}

/// A backup whose manifest or disk index cannot be read at all.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokenBackup {
    pub backup: String,
    pub error: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyReport {
    pub backups_checked: usize,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<ChunkProblem>,
    pub broken: Vec<BrokenBackup>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.broken.is_empty()
    }

    /// Ids of every backup that cannot be restored in full.
    pub fn affected_backups(&self) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self.broken.iter().map(|b| b.backup.clone()).collect();
        for p in &self.problems {
            s.extend(p.used_by.iter().map(|r| r.backup.clone()));
        }
        s
    }
}

impl Store {
    /// Verifies the given backups (all of them if `ids` is empty).
    pub fn verify(&self, ids: &[String]) -> Result<VerifyReport> {
        let _l = lock::shared(self.root())?;
        self.refresh()?;
        let manifests: Vec<Manifest> = if ids.is_empty() {
            self.list(None)?
        } else {
            ids.iter().map(|id| self.manifest(id)).collect::<Result<_>>()?
        };
        let mut report = VerifyReport {
            backups_checked: manifests.len(),
            ..Default::default()
        };

        // Pass 1: the distinct chunks referenced (not every reference: that could be
        // millions of entries for big disks).
        let mut wanted: HashSet<ChunkHash> = HashSet::new();
        let mut readable = Vec::new();
        for m in &manifests {
            let mut ok = true;
            for d in m.disks.iter().filter(|d| d.stored) {
                match self.disk_index(m, &d.info.name) {
                    Ok(idx) => wanted.extend(idx.chunks.iter().filter(|h| !h.is_zero())),
                    Err(e) => {
                        report.broken.push(BrokenBackup {
                            backup: m.id.clone(),
                            error: e.to_string(),
                        });
                        ok = false;
                    }
                }
            }
            if ok {
                readable.push(m);
            }
        }

        // Pass 2: read each once, in pack order so the disk reads sequentially.
        let mut order: Vec<(Option<(String, u64)>, ChunkHash)> = wanted
            .into_iter()
            .map(|h| (self.lookup(&h).map(|(p, e)| (p, e.offset)), h))
            .collect();
        order.sort();
        let mut files = PackFiles::default();
        let mut bad: HashMap<ChunkHash, String> = HashMap::new();
        for (_, h) in order {
            report.chunks_checked += 1;
            match self.read_chunk(&mut files, &h) {
                Ok(d) => report.bytes_checked += d.len() as u64,
                Err(p) => {
                    bad.insert(h, p);
                }
            }
        }
        if bad.is_empty() {
            return Ok(report);
        }

        // Pass 3: where the bad chunks are used.
        let mut used: HashMap<ChunkHash, Vec<ChunkRef>> = HashMap::new();
        for m in readable {
            for d in m.disks.iter().filter(|d| d.stored) {
                let idx = self.disk_index(m, &d.info.name)?;
                for (i, h) in idx.chunks.iter().enumerate() {
                    if bad.contains_key(h) {
                        used.entry(*h).or_default().push(ChunkRef {
                            backup: m.id.clone(),
                            vm: m.vm.clone(),
                            disk: d.info.name.clone(),
                            offset: i as u64 * idx.chunk_size as u64,
                        });
                    }
                }
            }
        }
        let mut problems: Vec<ChunkProblem> = bad
            .into_iter()
            .map(|(h, problem)| ChunkProblem {
                hash: h.to_hex(),
                problem,
                used_by: used.remove(&h).unwrap_or_default(),
            })
            .collect();
        problems.sort_by(|a, b| a.used_by.first().cmp(&b.used_by.first()));
        report.problems = problems;
        Ok(report)
    }
}
