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
            let token =
                minispod_control_plane::workers::enrollment::create_token_offline(&args).await?;
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
