//! The seed's two roles.
use std::process::ExitCode;

use crate::cli::RoleArgs;

pub fn server_main(_args: RoleArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("server is not built yet")
}

pub fn client_main(_args: RoleArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("client is not built yet")
}
