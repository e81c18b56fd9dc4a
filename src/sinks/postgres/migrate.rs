//! Schema migrations (`migrations/`, embedded at build time) and database creation.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, PgPool};

use super::classify_db;
use crate::sinks::SinkError;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies pending migrations (concurrent instances serialize on sqlx's advisory lock).
pub async fn run(pool: &PgPool) -> Result<(), SinkError> {
    MIGRATOR.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(inner) => classify_db(inner),
        other => SinkError::Database {
            transient: true,
            sqlstate: None,
            source: Box::new(other),
        },
    })
}

/// Creates the database named in `url` when it does not exist, connecting to the server's
/// `postgres` database to do so.
pub async fn create_database(url: &str) -> Result<(), SinkError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| SinkError::Config(format!("invalid postgres url: {e}")))?;
    let Some(name) = options.get_database().map(str::to_string) else {
        return Ok(());
    };
    let mut conn: PgConnection = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(classify_db)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .map_err(classify_db)?;
    if !exists {
        let sql = format!("CREATE DATABASE {}", super::columns::quote_ident(&name));
        match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another instance created it at the same moment.
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(classify_db(e)),
        }
    }
    Ok(())
}

/// `analytics-hub migrate`: creates the database if missing, applies the migrations, and
/// reports what is applied and which storage path (TimescaleDB or plain) the server offers.
pub async fn command(config: &super::PostgresConfig) -> Result<String, SinkError> {
    let url = config
        .url
        .clone()
        .ok_or_else(|| SinkError::Config("no database configured: set DATABASE_URL (or DB_HOST ...)".into()))?;
    if config.create_database {
        create_database(&url).await?;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .map_err(classify_db)?;
    run(&pool).await?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .map_err(classify_db)?;
    let timescale: bool = sqlx::query_scalar("SELECT hub_timescale()")
        .fetch_one(&pool)
        .await
        .map_err(classify_db)?;
    let mut out = String::new();
    for (version, description) in applied {
        out.push_str(&format!("applied {version} {description}\n"));
    }
    out.push_str(if timescale {
        "storage: TimescaleDB hypertables\n"
    } else {
        "storage: PostgreSQL native partitioning (timescaledb extension not available)\n"
    });
    Ok(out)
}
