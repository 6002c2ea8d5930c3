use minispod_control_plane::{
    Application,
    config::{Cli, Command},
    pki::Pki,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::from_env();
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            let app = Application::build(*args).await?;
            app.run_until_stopped().await
        }
        Command::CreateEnrollmentToken(args) => {
            use minispod_control_plane::workers::enrollment::{NewToken, create_token_offline};
            let spec = NewToken {
                ttl: args.ttl,
                max_uses: args.max_uses,
                description: args.description,
                machine_id: args.machine_id,
            };
            let token =
                create_token_offline(&args.data_dir, args.database_url.as_deref(), spec).await?;
            println!("{}", token.expose());
            Ok(())
        }
        Command::CaHash { data_dir } => {
            let pki = Pki::load_or_create(&data_dir, &[])?;
            println!("{}", pki.ca_hash());
            Ok(())
        }
    }
}
