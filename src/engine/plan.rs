//! A plan of kernel changes that can be undone step by step. Each step that succeeds pushes
//! its undo; when a later step fails, the undos run in reverse order.

use crate::error::{Error, Result};
use tracing::{error, warn};

type Undo<'a> = Box<dyn FnOnce() -> Result<()> + Send + 'a>;

/// Steps done so far, with how to undo each.
#[derive(Default)]
pub struct Plan<'a> {
    what: String,
    done: Vec<(String, Undo<'a>)>,
}

impl<'a> Plan<'a> {
    pub fn new(what: impl Into<String>) -> Plan<'a> {
        Plan {
            what: what.into(),
            done: Vec::new(),
        }
    }

    /// Run `step`; if it succeeds, remember `undo` for a later rollback.
    pub fn step<T>(
        &mut self,
        desc: impl Into<String>,
        step: impl FnOnce() -> Result<T>,
        undo: impl FnOnce() -> Result<()> + Send + 'a,
    ) -> Result<T> {
        let desc = desc.into();
        let out = step()?;
        super::journal::crash_point(&desc);
        self.done.push((desc, Box::new(undo)));
        Ok(out)
    }

    /// Run a step that needs no undo (a check, or the last step of a plan).
    pub fn last<T>(&mut self, step: impl FnOnce() -> Result<T>) -> Result<T> {
        step()
    }

    /// Number of steps done.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Keep everything that was done.
    pub fn commit(self) {}

    /// Undo every step done, newest first, and return the error to report: `cause` when the
    /// rollback was complete, `RollbackFailed` naming what was left behind otherwise.
    pub fn rollback(self, cause: Error) -> Error {
        warn!(plan = %self.what, error = %cause, steps = self.done.len(), "rolling back");
        let mut left = Vec::new();
        for (desc, undo) in self.done.into_iter().rev() {
            if let Err(e) = undo() {
                error!(plan = %self.what, step = %desc, error = %e, "undo failed");
                left.push(format!("{desc} ({e})"));
            }
        }
        Error::after_rollback(cause, left)
    }

    /// Run `body` with this plan; roll back if it fails, commit otherwise.
    pub fn run<T>(mut self, body: impl FnOnce(&mut Plan<'a>) -> Result<T>) -> Result<T> {
        match body(&mut self) {
            Ok(v) => {
                self.commit();
                Ok(v)
            }
            Err(e) => Err(self.rollback(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn undoes_in_reverse_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let r: Result<()> = Plan::new("t").run(|p| {
            for i in 0..3 {
                let l2 = l.clone();
                p.step(
                    format!("s{i}"),
                    || Ok(()),
                    move || {
                        l2.lock().unwrap().push(i);
                        Ok(())
                    },
                )?;
            }
            Err(Error::Other("boom".into()))
        });
        assert_eq!(r.unwrap_err().to_string(), "boom");
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
    }

    #[test]
    fn failed_undo_is_reported() {
        let r: Result<()> = Plan::new("t").run(|p| {
            p.step("make x", || Ok(()), || Err(Error::Other("EBUSY".into())))?;
            Err(Error::Other("boom".into()))
        });
        let e = r.unwrap_err();
        assert!(matches!(e, Error::RollbackFailed { .. }));
        assert!(e.to_string().contains("make x (EBUSY)"), "{e}");
    }

    #[test]
    fn success_keeps_steps() {
        let undone = Arc::new(Mutex::new(false));
        let u = undone.clone();
        let r = Plan::new("t").run(|p| {
            p.step(
                "a",
                || Ok(7),
                move || {
                    *u.lock().unwrap() = true;
                    Ok(())
                },
            )
        });
        assert_eq!(r.unwrap(), 7);
        assert!(!*undone.lock().unwrap());
    }
}
