//! `courier expose`: this host's courier::shm service on the network, through a zenoh bridge.

use courier_net::zenoh::Wait;
use std::time::Duration;

/// `courier expose <name>... [--listen ENDPOINT]... [--connect ENDPOINT]... [--namespace NS]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The courier::shm services to expose (each must be running, or start within `--wait`):
    /// one bridge process serves every service of the host it is given.
    #[arg(required = true)]
    names: Vec<String>,
    /// A zenoh endpoint to listen on, e.g. `tcp/0.0.0.0:7447` (repeatable).
    #[arg(long)]
    listen: Vec<String>,
    /// A zenoh endpoint (a router or a peer) to connect to, e.g. `tcp/10.0.0.2:7447`
    /// (repeatable).
    #[arg(long)]
    connect: Vec<String>,
    /// The key's namespace: `courier/<namespace>/<name>` (default: this host's name).
    #[arg(long)]
    namespace: Option<String>,
    /// How many calls the bridge makes at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// How long to wait for the service to appear, in seconds.
    #[arg(long, default_value_t = 5)]
    wait: u64,
}

/// Runs the bridge until the process is stopped; false if it could not start.
pub(crate) fn run(args: &Args) -> bool {
    let config = match courier_net::peer_config(&args.listen, &args.connect) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("courier expose: {e}");
            return false;
        }
    };
    let session = match courier_net::zenoh::open(config).wait() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("courier expose: opening the zenoh session: {e}");
            return false;
        }
    };
    let mut expose = courier_net::ExposeConfig::new()
        .workers(args.workers)
        .connect_timeout(Duration::from_secs(args.wait));
    if let Some(ns) = &args.namespace {
        expose = expose.namespace(ns);
    }
    let mut exposed = Vec::new();
    for name in &args.names {
        match courier_net::expose_with(&session, name, &expose) {
            Ok(e) => {
                println!("exposed {name} at {}", e.key());
                exposed.push(e);
            }
            Err(e) => {
                eprintln!("courier expose {name}: {e}");
                return false;
            }
        }
    }
    // Serves until stopped (SIGINT, SIGTERM): the bridge's workers do the work.
    loop {
        std::thread::park();
    }
}
