//! Spreading independent reads over the CPUs. Listing thousands of storage objects is
//! thousands of small reads of configfs (or of block devices), each mostly the kernel's path
//! walk, which runs on every CPU at once.

use std::sync::OnceLock;

/// Threads one call uses at most.
const MAX_THREADS: usize = 8;

fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS)
    })
}

/// `f` of every item, in the items' order. With at least `min_per_thread` items for each of
/// several threads, contiguous runs of items go to scoped threads (one per CPU we may use,
/// the calling thread included); a thread that cannot be started leaves its run to the
/// caller. A panic in `f` is passed on. Threads carry the caller's tracing span.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    min_per_thread: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = cpus().min(items.len() / min_per_thread.max(1));
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let run = items.len().div_ceil(threads);
    let span = tracing::Span::current();
    std::thread::scope(|s| {
        let mut runs = items.chunks(run);
        let first = runs.next().unwrap_or_default();
        let f = &f;
        let started: Vec<_> = runs
            .map(|chunk| {
                let span = span.clone();
                let h = std::thread::Builder::new()
                    .name("lio-replica-read".into())
                    .spawn_scoped(s, move || {
                        span.in_scope(|| chunk.iter().map(f).collect::<Vec<R>>())
                    });
                (chunk, h.ok())
            })
            .collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        for (chunk, h) in started {
            match h {
                Some(h) => match h.join() {
                    Ok(v) => out.extend(v),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                None => out.extend(chunk.iter().map(f)),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_covers_every_item() {
        for n in [0usize, 1, 7, 64, 1000, 1001] {
            let items: Vec<usize> = (0..n).collect();
            let got = map(&items, 1, |i| i * 2);
            assert_eq!(got, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{n}");
        }
    }

    #[test]
    fn spreads_over_threads_when_there_is_enough() {
        let items: Vec<usize> = (0..4000).collect();
        let names = map(&items, 1, |_| std::thread::current().id());
        let distinct: std::collections::BTreeSet<String> =
            names.iter().map(|id| format!("{id:?}")).collect();
        assert_eq!(distinct.len(), cpus().min(4000), "{distinct:?}");
        // too few items per thread: all on the caller's
        let me = std::thread::current().id();
        assert!(map(&items[..10], 64, |_| std::thread::current().id())
            .iter()
            .all(|id| *id == me));
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn a_panic_is_passed_on() {
        let items: Vec<usize> = (0..100).collect();
        map(&items, 1, |i| {
            if *i == 99 {
                panic!("boom");
            }
            *i
        });
    }
}
