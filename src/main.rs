//! `analytics-hub`: CLI → config → app.

use std::process::ExitCode;

use clap::Parser;
use llm_analytics_hub::cli::{BenchCommand, Cli, Command};
use llm_analytics_hub::config::{Config, LogFormat};
use llm_analytics_hub::generate::output::{post_live, write_ndjson};
use tracing_subscriber::EnvFilter;

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// A subcommand of a component this binary was built without.
#[cfg(not(all(feature = "kafka", feature = "postgres")))]
fn not_built(command: &str, feature: &str) -> ExitCode {
    fail(format!(
        "`{command}` needs the `{feature}` cargo feature, which this build leaves out (see `analytics-hub --version`)"
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Large stacks: planning and evaluating a deep but legal expression (up to
    // `query.max_expr_terms` operators) recurses once per level. Only touched pages are
    // committed, so idle threads cost address space, not memory.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(64 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Serve(args) => {
            args.apply(&mut config);
            init_logging(&config);
            match runtime.block_on(llm_analytics_hub::app::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Generate(args) => {
            init_logging(&config);
            let generator = match args.generator_config() {
                Ok(g) => g,
                Err(e) => return fail(e),
            };
            let result = match &args.target {
                Some(url) => runtime
                    .block_on(post_live(generator, url, args.count, args.batch_size.max(1)))
                    .map(|_| ()),
                None if args.output == "-" => write_ndjson(generator, args.count, &mut std::io::stdout().lock()),
                None => std::fs::File::create(&args.output)
                    .map_err(Into::into)
                    .and_then(|mut f| write_ndjson(generator, args.count, &mut f)),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Export(args) => match runtime.block_on(llm_analytics_hub::exports::client::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        #[cfg(feature = "kafka")]
        Command::Bench(BenchCommand::Kafka {
            brokers,
            topic,
            count,
            partitions,
            no_produce,
        }) => {
            init_logging(&config);
            let args = llm_analytics_hub::sources::kafka::bench::KafkaBenchArgs {
                brokers,
                topic,
                count,
                partitions,
                no_produce,
            };
            match runtime.block_on(llm_analytics_hub::sources::kafka::bench::run(args)) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        #[cfg(not(feature = "kafka"))]
        Command::Bench(BenchCommand::Kafka { .. }) => not_built("bench kafka", "kafka"),
        Command::Bench(BenchCommand::Rollup {
            input,
            batch_rows,
            sql,
            decoder,
            decoders,
            all_columns,
        }) => {
            init_logging(&config);
            let sql = sql.unwrap_or_else(|| llm_analytics_hub::bench::ROLLUP_SQL.to_string());
            let options = llm_analytics_hub::bench::RollupOptions {
                batch_rows,
                decoder,
                all_columns,
            };
            let result = if decoders {
                runtime.block_on(llm_analytics_hub::bench::compare::compare_decoders(
                    &input, &sql, &options,
                ))
            } else {
                runtime.block_on(llm_analytics_hub::bench::compare::rollup(&input, &sql, &options))
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        #[cfg(not(feature = "postgres"))]
        Command::Migrate => not_built("migrate", "postgres"),
        #[cfg(feature = "postgres")]
        Command::Migrate => {
            init_logging(&config);
            match runtime.block_on(llm_analytics_hub::sinks::postgres::migrate::command(&config.postgres)) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Keys(command) => match runtime.block_on(async {
            let dir = command.data_dir().unwrap_or(&config.storage.data_dir).to_path_buf();
            let store = llm_analytics_hub::app::key_store(&config, &dir).await?;
            llm_analytics_hub::auth::cli::run(command, &store).await
        }) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Config => match config.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}
