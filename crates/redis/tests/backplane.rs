//! The shared backplane suite (tests/suite) against Redis: the shared local server on 6379
//! (scripts/services.sh) and, for the restart test, a private `redis-server` on a free port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod suite;

use std::process::Stdio;

use signalbox_redis::RedisBackplane;

struct Redis;

impl suite::Driver for Redis {
    type B = RedisBackplane;

    fn shared_port() -> u16 {
        6379
    }

    fn url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/")
    }

    async fn connect(url: String) -> RedisBackplane {
        RedisBackplane::new(&url).unwrap()
    }

    fn spawn_server(port: u16) -> tokio::process::Child {
        tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh)")
    }
}

backplane_tests!(Redis);
