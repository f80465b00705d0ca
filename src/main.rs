//! The `taskledger` command line: serve, mcp, audit, export, rebuild, demo
//! and flags. Each command's logic lives in the library; this file parses
//! arguments and maps results to output and exit codes.

use clap::{Args, CommandFactory, Parser, Subcommand};

/// mimalloc: the service allocates many small, short-lived buffers (JSON,
/// records); measured faster here than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;
use taskledger::audit;
use taskledger::flags::{self, FlagsError, Resolution, StatusFilter, Target};
use taskledger::http::settings::LogFormat;
use taskledger::service::replay_into;
use taskledger_events::store::LogStore;
use taskledger_events::{SledStore, export, hex};
use taskledger_projections::{State, snapshot};

#[derive(Parser)]
#[command(
    name = "taskledger",
    version,
    about = "An open task market for AI agents on a verifiable event log"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the market: REST API, SSE, metrics and timers over an embedded sled log.
    Serve(Box<taskledger::http::settings::Settings>),
    /// Serve the MCP tools on stdio as a client of a market's REST API.
    Mcp {
        /// The market's REST API.
        #[arg(
            long,
            env = "MARKET_API_URL",
            default_value = "http://127.0.0.1:8080/api/v1"
        )]
        api_url: String,
        /// Your owner or agent key.
        #[arg(long, env = "MARKET_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// Replay a log: chain, every rule, conservation. Exit 1 on any failure.
    Audit {
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        data: Option<PathBuf>,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write the portable log file auditors need.
    Export {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute projections from genesis, compare with the stored snapshot, store a new one.
    Rebuild {
        #[arg(long)]
        data: PathBuf,
    },
    /// Simulate a market through the same command path.
    Demo {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 1000)]
        tasks: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Review risk holds: list them, release (frozen back to earned) or
    /// confirm (stays frozen). Exit 0 done, 1 refused, 2 usage.
    Flags {
        #[command(subcommand)]
        action: FlagsCmd,
    },
}

#[derive(Subcommand)]
enum FlagsCmd {
    /// Flags by status, oldest first.
    List {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_enum, default_value_t = StatusFilter::Open)]
        status: StatusFilter,
        /// Print `{"flags": [...]}` as the admin route answers.
        #[arg(long)]
        json: bool,
    },
    /// Release a hold: its frozen credits go back to earned.
    Release(ResolveArgs),
    /// Confirm a hold: its credits stay frozen.
    Confirm(ResolveArgs),
}

#[derive(Args)]
struct ResolveArgs {
    /// The flag's id.
    id: uuid::Uuid,
    /// Why; recorded in the log with the operator's name.
    #[arg(long)]
    reason: String,
    /// Who decides; recorded in the log.
    #[arg(long)]
    operator: String,
    #[command(flatten)]
    target: TargetArgs,
    /// Print the flag as JSON.
    #[arg(long)]
    json: bool,
}

/// A data dir (no server may hold it) or a server's URL and admin token.
#[derive(Args)]
struct TargetArgs {
    /// The data dir, opened in-process.
    #[arg(long, conflicts_with = "url", required_unless_present = "url")]
    data: Option<PathBuf>,
    /// A running server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: Option<String>,
    /// The server's admin token.
    #[arg(long, env = "TASKLEDGER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

impl TargetArgs {
    /// Where to act; a usage error (exit 2) without a token for `--url`.
    fn target(self) -> Target {
        match (self.data, self.url, self.admin_token) {
            (Some(dir), _, _) => Target::Data(dir),
            (None, Some(url), Some(admin_token)) => Target::Server { url, admin_token },
            _ => Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--url needs --admin-token (or TASKLEDGER_ADMIN_TOKEN)",
                )
                .exit(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (json, default_filter) = match &cli.command {
        Cmd::Serve(s) => (s.log == LogFormat::Json, "info"),
        _ => (false, "warn"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TASKLEDGER_LOG_FILTER")
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("taskledger: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Cmd::Serve(settings) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(taskledger::http::serve(*settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Mcp { api_url, api_key } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(taskledger::mcp::serve_stdio(&api_url, api_key))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit { data, file, json } => {
            let report = match (data, file) {
                (_, Some(file)) => audit::audit_file(&file),
                (Some(data), None) => audit::audit_store(&SledStore::open(&data)?),
                (None, None) => return Err("give --data DIR or --file LOG".into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Export { data, out } => {
            let store = SledStore::open(&data)?;
            let head = export::write_all(&store, &out)?;
            println!("exported {} records, head {}", head.seq, hex(&head.hash));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rebuild { data } => rebuild(&data),
        Cmd::Demo { data, tasks, seed } => {
            taskledger::demo::run(&data, tasks, seed)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Flags { action } => Ok(run_flags(action)),
    }
}

/// `flags`: print the answer, or the refusal's code and message on stderr
/// with exit 1.
fn run_flags(action: FlagsCmd) -> ExitCode {
    let printed = match action {
        FlagsCmd::List {
            target,
            status,
            json,
        } => flags::list(&target.target(), status).and_then(|rows| {
            if json {
                print_json(&flags::FlagList { flags: rows })
            } else if rows.is_empty() {
                println!("no {} risk flags", status.as_str());
                Ok(())
            } else {
                print!("{}", flags::table(&rows));
                Ok(())
            }
        }),
        FlagsCmd::Release(args) => resolve(args, Resolution::Release),
        FlagsCmd::Confirm(args) => resolve(args, Resolution::Confirm),
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("taskledger flags: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(args: ResolveArgs, resolution: Resolution) -> Result<(), FlagsError> {
    let id = taskledger_events::FlagId(args.id);
    let row = flags::resolve(
        &args.target.target(),
        id,
        resolution,
        &args.operator,
        &args.reason,
    )?;
    if args.json {
        print_json(&row)
    } else {
        println!("{}", flags::summary(&row));
        Ok(())
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), FlagsError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| FlagsError::Server(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn rebuild(data: &std::path::Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut store = SledStore::open(data)?;
    let mut state = State::new();
    let mut same = true;
    match store.latest_snapshot()? {
        Some((seq, bytes)) if !snapshot::is_current(&bytes) => println!(
            "snapshot at seq {seq} is of an older state layout: not compared, replaced below"
        ),
        Some((seq, bytes)) => {
            let stored = snapshot::decode(&bytes)?;
            replay_into(&store, &mut state, seq)?;
            same = state == stored;
            println!(
                "snapshot at seq {seq}: {}",
                if same {
                    "rebuilt state equals the stored snapshot"
                } else {
                    "DIFFERS from the rebuilt state"
                }
            );
        }
        None => println!("no stored snapshot to compare with"),
    }
    replay_into(&store, &mut state, u64::MAX)?;
    store.put_snapshot(state.head_seq, &snapshot::encode(&state)?)?;
    println!(
        "rebuilt {} records; new snapshot stored at seq {}",
        state.head_seq, state.head_seq
    );
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
