//! CopyType 2 Async: the source's shim becomes a dm `raid` raid1 whose target leg is
//! `write_mostly` with `max_write_behind`: a write completes when the source leg has it, the
//! target leg may lag by up to max_write_behind/2 outstanding writes (bounded lag, tracked by
//! the write-intent bitmap). dm-raid needs a metadata device per leg; both are carved from the
//! target's tail, so the target must be larger than the source by two metadata areas
//! ([`super::Options::raid_meta_sectors`] each, 4 MiB by default).

use super::plan::Plan;
use super::relationship::{self, Finish, Relationship};
use super::{adopt, Attached, Element, Engine, Inner};
use crate::dm::{LinearParams, TableLine, Target};
use crate::error::{Error, Result, ReturnCode};
use crate::service::CopyType;

pub(crate) fn attach(e: &Engine, src: Element, tgt: Element) -> Result<Attached> {
    let i = &*e.inner;
    let meta = i.opts.raid_meta_sectors;
    let need = src.sectors + 2 * meta;
    if tgt.sectors < need {
        return Err(Error::Invalid(format!(
            "target {} ({} sectors) is too small for an Async copy of {} ({} sectors): it needs \
             {need} sectors, the source's size plus two {meta}-sector metadata areas",
            tgt.so.element(),
            tgt.sectors,
            src.so.element(),
            src.sectors
        )));
    }
    let rel = Plan::new("attach Async").run(|p| {
        let sb = adopt::adopt_step(i, &src, p)?;
        let tb = adopt::adopt_step(i, &tgt, p)?;
        let rel = Relationship::new(CopyType::Async, &sb, &tb)?;
        relationship::create_tag_step(i, &rel, p)?;
        let mut devnos = Vec::new();
        for (k, name) in rel.meta_names()?.into_iter().enumerate() {
            let table = vec![TableLine {
                start: 0,
                length: meta,
                target: Target::Linear(LinearParams {
                    device: rel.tgt_raw.clone(),
                    offset: rel.sectors + k as u64 * meta,
                }),
            }];
            let n2 = name.clone();
            let info = p.step(
                format!("create {name}"),
                || i.dm.create(&name, &table),
                move || i.dm.remove(&n2),
            )?;
            p.last(|| i.zero_head(&name, (meta * 512) as usize))?;
            devnos.push(info.devno());
        }
        let table = relationship::raid_table(i, &rel, [devnos[0].clone(), devnos[1].clone()]);
        let shim = rel.src_shim.clone();
        let linear = Inner::linear(&rel.src_raw, rel.sectors);
        p.step(
            format!("load raid1 on {}", rel.src_shim),
            || i.swap_table(&rel.src_shim, &table),
            move || i.swap_table(&shim, &linear),
        )?;
        Ok(rel)
    })?;
    let id = rel.id.clone();
    relationship::register(i, rel);
    let job = relationship::start_job(e, &id, Finish::Keep, "asynchronous mirror")?;
    Ok(Attached {
        code: ReturnCode::JobStarted,
        job: Some(job),
        relationship: Some(id),
    })
}
