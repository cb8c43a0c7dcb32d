//! The shared backplane suite (crates/redis/tests/suite) against NATS: the shared local server on
//! 4222 (scripts/services.sh) and, for the restart test, a private `nats-server` on a free port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../redis/tests/suite/mod.rs"]
mod suite;

use std::process::Stdio;

use signalbox_nats::NatsBackplane;

struct Nats;

impl suite::Driver for Nats {
    type B = NatsBackplane;

    fn shared_port() -> u16 {
        4222
    }

    fn url(port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }

    async fn connect(url: String) -> NatsBackplane {
        NatsBackplane::connect(&url).await.unwrap()
    }

    fn spawn_server(port: u16) -> tokio::process::Child {
        let binary = if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        tokio::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server must be installed (scripts/setup.sh)")
    }
}

backplane_tests!(Nats);
