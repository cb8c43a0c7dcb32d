//! `/echo`: the official app's `EchoConnectionHandler` (spec §10.2), a raw connection endpoint
//! without the hub protocol that sends every chunk it receives straight back. It serves every
//! transport, including a WebSocket opened without negotiating (no `id`).

use signalbox::{ConnectionEndpoint, RawConnection};

/// The echo endpoint, with the library's default transport options (all three transports).
pub(crate) fn echo_endpoint() -> ConnectionEndpoint {
    ConnectionEndpoint::new(|mut connection: RawConnection| async move {
        tracing::debug!(
            connection_id = connection.id(),
            transport = connection.transport().name(),
            "echo connection"
        );
        while let Some(data) = connection.recv().await {
            if !connection.send(data).await {
                break;
            }
        }
    })
}
