//! The release engine run over a dataset's stored blocks on all cores.
//!
//! Blocks are opened a window at a time ([`datasets::for_each_window`]); each
//! block is counted (pass 1) or treated and sealed (pass 2) on the
//! [`bulk_pool`], and the results are taken in block order on the calling
//! thread. Pass 2 first asks which records each block releases, so every
//! block knows the index of its first released record before it is
//! emitted: the records, their indices and the chunks are the same as one
//! sequential run's, whatever the number of cores.

use super::bulk_pool;
use super::datasets::{self, DatasetMeta, RowBlock};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::progress::Progress;
use pdx_schemas::engine::{ClassCounter, Decision, EmitError, Engine, FieldSealer, RecordSink};
use rayon::prelude::*;

/// Pass 1 over rows `from..to`: the classes of every record, counted per
/// block in parallel and merged in order.
pub fn count_classes<'e, 's>(
    node: &Node,
    meta: &DatasetMeta,
    (from, to): (u64, u64),
    engine: &'e Engine<'s>,
    progress: &dyn Progress,
) -> Result<ClassCounter<'e, 's>> {
    let pool = bulk_pool()?;
    let mut total = engine.counter();
    datasets::for_each_window(node, meta, from, to, |blocks| {
        let counted: Vec<Result<ClassCounter<'e, 's>>> = pool.install(|| {
            blocks
                .par_iter()
                .map(|block| {
                    let mut counter = engine.counter_at(block.first);
                    block.for_each(|row| Ok(counter.add(row)?))?;
                    Ok(counter)
                })
                .collect()
        });
        for counter in counted {
            total.merge(counter?)?;
        }
        progress.set(total.records());
        Ok(())
    })?;
    Ok(total)
}

/// How pass 2 runs: a fresh sealer and sink per block, and what an
/// [`EmitError`] becomes.
pub struct Emission<'a, S, F> {
    /// A sink for one block's records.
    pub sink: &'a (dyn Fn() -> S + Sync),
    /// A sealer for one block.
    pub sealer: &'a (dyn Fn() -> F + Sync),
    /// The node error for a failed emission.
    pub error: &'a (dyn Fn(EmitError) -> NodeError + Sync),
}

impl<S, F> std::fmt::Debug for Emission<'_, S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Emission(..)")
    }
}

/// Pass 2 over rows `from..to`: each block's released records treated and
/// sealed in parallel into a sink of its own; `take` receives the sinks in
/// block order. Returns the records released.
pub fn emit<S: RecordSink + Send, F: FieldSealer>(
    node: &Node,
    meta: &DatasetMeta,
    (from, to): (u64, u64),
    (engine, decision): (&Engine<'_>, &Decision),
    how: Emission<'_, S, F>,
    progress: &dyn Progress,
    mut take: impl FnMut(S) -> Result<()>,
) -> Result<u64> {
    let pool = bulk_pool()?;
    let mut released = 0u64;
    datasets::for_each_window(node, meta, from, to, |blocks| {
        // Which records each block releases (all of them when nothing is
        // suppressed), hence where its first released record lands.
        let kept: Vec<Option<Vec<bool>>> = if decision.suppresses_nothing() {
            blocks.iter().map(|_| None).collect()
        } else {
            pool.install(|| {
                blocks
                    .par_iter()
                    .map(|block| released_in(engine, decision, block).map(Some))
                    .collect::<Result<_>>()
            })?
        };
        let mut starts = Vec::with_capacity(blocks.len());
        for (block, kept) in blocks.iter().zip(&kept) {
            starts.push(released);
            let n = match kept {
                None => block.rows(),
                Some(k) => k.iter().filter(|&&r| r).count() as u64,
            };
            released = released
                .checked_add(n)
                .ok_or_else(|| NodeError::Invalid("more than 2^64 released records".into()))?;
        }
        let sinks: Vec<Result<S>> = pool.install(|| {
            blocks
                .par_iter()
                .zip(kept.par_iter())
                .zip(starts.par_iter())
                .map(|((block, kept), &start)| {
                    let mut emitter = engine.emitter_at(decision, block.first, start);
                    let mut sink = (how.sink)();
                    let mut sealer = (how.sealer)();
                    let mut kept = kept.as_ref().map(|k| k.iter());
                    block.for_each(|row| {
                        let release = match &mut kept {
                            None => true,
                            Some(k) => k.next().copied().unwrap_or(false),
                        };
                        if release {
                            emitter
                                .emit_released(row, &mut sealer, &mut sink)
                                .map_err(how.error)?;
                        } else {
                            emitter.skip();
                        }
                        Ok(())
                    })?;
                    Ok(sink)
                })
                .collect()
        });
        for sink in sinks {
            take(sink?)?;
        }
        progress.set(released);
        Ok(())
    })?;
    Ok(released)
}

/// Whether each record of `block` is released.
fn released_in(engine: &Engine<'_>, decision: &Decision, block: &RowBlock) -> Result<Vec<bool>> {
    let mut emitter = engine.emitter_at(decision, block.first, 0);
    let mut kept = Vec::with_capacity(usize::try_from(block.rows()).unwrap_or(0));
    block.for_each(|row| {
        kept.push(emitter.check(row)?);
        Ok(())
    })?;
    Ok(kept)
}
