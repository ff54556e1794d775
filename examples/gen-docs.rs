//! Writes the man pages (section 8: the program is an administrator's) and the bash and zsh
//! completions from the CLI's own definition, for the Debian package (scripts/build-deb).
//!
//! Run: `cargo run --release --example gen-docs -- OUTDIR`; writes `OUTDIR/man/*.8` and
//! `OUTDIR/completions/{lio-replica.bash,_lio-replica}`.

use clap::CommandFactory;
use clap_complete::Shell;
use lio_replica::cli::Cli;
use std::path::PathBuf;

fn man_page(cmd: clap::Command, name: &str, dir: &std::path::Path) -> std::io::Result<()> {
    let mut out = Vec::new();
    // (clap wants a static name; this program runs once and exits)
    let static_name: &'static str = Box::leak(name.to_string().into_boxed_str());
    clap_mangen::Man::new(cmd.name(static_name))
        .section("8")
        .manual("lio-replica")
        .render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.8")), out)
}

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args_os().nth(1).expect("usage: gen-docs OUTDIR"));
    let man = out.join("man");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let cmd = Cli::command();
    // one page for the program, one per subcommand (lio-replica-attach.8, ...)
    for sub in cmd.get_subcommands() {
        let name = format!("lio-replica-{}", sub.get_name());
        man_page(sub.clone(), &name, &man)?;
    }
    man_page(cmd.clone(), "lio-replica", &man)?;
    let mut cmd = cmd;
    clap_complete::generate_to(Shell::Bash, &mut cmd, "lio-replica", &comp)?;
    clap_complete::generate_to(Shell::Zsh, &mut cmd, "lio-replica", &comp)?;
    Ok(())
}
