//! `leadflow`: one command for people. `leadflow up` runs every service in one process,
//! `leadflow migrate` prepares the database, `leadflow admin create` makes an administrator.

mod jwt_secret;
mod up;

use clap::{Parser, Subcommand};
use leadflow_gateway::admin::{NewAdmin, upsert_admin};
use leadflow_platform::{
    config::{DatabaseConfig, TelemetryConfig},
    telemetry,
};
use secrecy::SecretString;

#[derive(Parser)]
#[command(
    name = "leadflow",
    version,
    about = "leadflow: event-driven lead scoring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if needed, apply migrations, and run gateway, scorer and notifier.
    Up(Box<up::UpArgs>),
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        telemetry: TelemetryConfig,
    },
    /// Seed demo users (admin, manager, rep1, rep2; prints their passwords), leads and inventory.
    Demo {
        /// How many leads to add.
        #[arg(long, default_value_t = 300)]
        leads: usize,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Re-score every lead with the current model (after a model change). Resumes an
    /// interrupted run.
    Rescore {
        /// Every lead (the only mode for now; required so it is never run by accident).
        #[arg(long, required = true)]
        all: bool,
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        scorer: leadflow_scorer::ScorerArgs,
    },
    /// Manage administrators.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin, or reset an existing user's password and make them an admin.
    Create {
        #[arg(long)]
        email: String,
        /// Also read from LEADFLOW_ADMIN_PASSWORD, which keeps it out of the process list.
        #[arg(long, env = "LEADFLOW_ADMIN_PASSWORD", hide_env_values = true)]
        password: SecretString,
        #[arg(long, default_value = "Administrator")]
        name: String,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up(args) => up::run(*args).await,
        Command::Migrate {
            database,
            telemetry: telemetry_config,
        } => {
            let _telemetry = telemetry::init("leadflow", &telemetry_config)?;
            up::migrate_or_explain(&database).await?;
            println!("Database {} is up to date.", database.database_url);
            Ok(())
        }
        Command::Demo { leads, database } => {
            up::migrate_or_explain(&database).await?;
            let pool = sqlx_pool(&database).await?;
            let report = leadflow_gateway::demo::seed(&pool, leads).await?;
            pool.close().await;
            println!(
                "Seeded {} leads and {} inventory items. Sign in as:",
                report.leads, report.items
            );
            for user in report.users {
                println!(
                    "  {:<9} {:<26} password {}",
                    user.role, user.email, user.password
                );
            }
            println!("These passwords are new on every run; keep them out of shared screens.");
            Ok(())
        }
        Command::Rescore {
            all: _,
            database,
            scorer,
        } => {
            up::migrate_or_explain(&database).await?;
            let pool = sqlx_pool(&database).await?;
            let config = scorer.model_config()?;
            let finished = leadflow_scorer::rescore_all::rescore_all(&pool, &config, |p| {
                if p.resumed && p.done <= 200 {
                    println!("Resuming run {}.", p.run);
                }
                println!("{}/{} leads re-scored", p.done, p.total);
            })
            .await?;
            pool.close().await;
            println!(
                "Done: {} leads re-scored with model {}.",
                finished.done,
                leadflow_scorer::model::MODEL_VERSION
            );
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    email,
                    password,
                    name,
                    database,
                },
        } => {
            let admin = NewAdmin::parse(&email, password, &name)?;
            up::migrate_or_explain(&database).await?;
            let pool = sqlx_pool(&database).await?;
            let id = upsert_admin(&pool, &admin).await?;
            pool.close().await;
            println!("Admin {} is ready (user id {id}).", admin.email());
            Ok(())
        }
    }
}

async fn sqlx_pool(database: &DatabaseConfig) -> anyhow::Result<sqlx::PgPool> {
    use anyhow::Context as _;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database.database_url.expose())
        .await
        .with_context(|| format!("connecting to {}", database.database_url))
}
