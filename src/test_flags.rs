//! Tests' parsing of one flag group (a `#[command(flatten)]` struct) on its own.

/// A command line made of flag group `A` alone.
#[derive(Debug, clap::Parser)]
struct Only<A: clap::Args> {
    #[command(flatten)]
    group: A,
}

/// Parses `args` (without the program name) as flag group `A`; exits as clap does on a bad flag.
pub(crate) fn parse<A: clap::Args>(args: &[&str]) -> A {
    use clap::Parser;
    Only::<A>::parse_from(std::iter::once("strata").chain(args.iter().copied())).group
}

/// Like [`parse`], the error instead of the exit.
pub(crate) fn try_parse<A: clap::Args>(args: &[&str]) -> Result<A, clap::Error> {
    use clap::Parser;
    Ok(Only::<A>::try_parse_from(std::iter::once("strata").chain(args.iter().copied()))?.group)
}
