//! OpenTelemetry traces, exported over OTLP (HTTP/protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable is set; off
//! otherwise. The exporter reads the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout,
//! compression), the resource reads `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` (the
//! service name defaults to `signalbox`) and the batch processor `OTEL_BSP_*`.
//!
//! The `tracing` spans of the service and of the library become OpenTelemetry spans through
//! `tracing-opentelemetry`. W3C trace context (`traceparent`, `tracestate`) is taken from REST
//! requests (the parent of the request span, [`set_http_parent`]), from SignalR message headers
//! of hub invocations and from backplane envelopes (through the library's
//! [`signalbox::trace::TracePropagator`], installed by [`Telemetry::start`]), and written into
//! the headers of delivered `Notification` invocations.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use signalbox::trace::Headers;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The service name when neither `OTEL_SERVICE_NAME` nor a `service.name` resource attribute
/// is set.
pub const DEFAULT_SERVICE_NAME: &str = "signalbox";

/// The instrumentation scope of the spans.
const SCOPE: &str = "signalbox";

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// Only `http/protobuf` is built in.
    #[error("unsupported OTLP protocol '{0}' (only http/protobuf is supported)")]
    UnsupportedProtocol(String),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What [`Telemetry::start`] needs; [`TelemetryConfig::from_env`] reads the standard variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The full traces URL (`…/v1/traces`); `None` lets the exporter read
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` itself.
    pub endpoint: Option<String>,
    /// The `service.name`; `None` leaves it to `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: Option<String>,
    /// The batch processor's delay; `None` leaves it to `OTEL_BSP_SCHEDULE_DELAY` (5 s).
    pub schedule_delay: Option<Duration>,
}

impl TelemetryConfig {
    /// The configuration from the standard `OTEL_*` variables; `None` (tracing off) without an
    /// OTLP endpoint, with `OTEL_SDK_DISABLED=true` or with `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`TelemetryConfig::from_env`] over any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, TelemetryError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        if let Some(protocol) = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .filter(|p| p.trim() != "http/protobuf")
        {
            return Err(TelemetryError::UnsupportedProtocol(protocol));
        }
        let named = set("OTEL_SERVICE_NAME").is_some()
            || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                a.split(',')
                    .any(|pair| pair.trim_start().starts_with("service.name="))
            });
        Ok(Some(Self {
            endpoint: None,
            service_name: (!named).then(|| DEFAULT_SERVICE_NAME.to_owned()),
            schedule_delay: None,
        }))
    }
}

/// The running tracer provider. Call [`Telemetry::shutdown`] at service stop so that the last
/// spans are exported.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Builds the OTLP exporter and the tracer provider, and installs the W3C propagators (the
    /// global OpenTelemetry one and the library's hook). Call outside an async context: the
    /// exporter's HTTP client is a blocking one on the batch processor's thread.
    pub fn start(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(endpoint) = &config.endpoint {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let exporter = exporter.build()?;
        let mut batch = BatchConfigBuilder::default();
        if let Some(delay) = config.schedule_delay {
            batch = batch.with_scheduled_delay(delay);
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let mut resource = Resource::builder();
        if let Some(name) = &config.service_name {
            resource = resource.with_service_name(name.clone());
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        signalbox::trace::set_propagator(std::sync::Arc::new(W3cPropagator));
        Ok(Self { provider })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SCOPE))
            .with_tracked_inactivity(false)
            .with_threads(false)
    }

    /// Exports what is pending now (blocking).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "cannot flush traces");
        }
    }

    /// Exports what is pending and stops the exporter (blocking: call it outside the runtime or
    /// in `spawn_blocking`).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "trace exporter shutdown failed");
        }
    }
}

/// The library's hook over the W3C trace context propagator.
#[derive(Debug)]
struct W3cPropagator;

impl signalbox::trace::TracePropagator for W3cPropagator {
    fn set_parent(&self, span: &tracing::Span, headers: &Headers) {
        let context = TraceContextPropagator::new().extract(&HeadersCarrier(headers));
        if context.span().span_context().is_valid() {
            // Fails only for a span that is disabled or already started: then it keeps its parent.
            let _ = span.set_parent(context);
        }
    }

    fn inject(&self, span: &tracing::Span, headers: &mut Headers) {
        let context = span.context();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut HeadersInjector(headers));
        }
    }
}

struct HeadersCarrier<'a>(&'a Headers);

impl Extractor for HeadersCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct HeadersInjector<'a>(&'a mut Headers);

impl Injector for HeadersInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct HttpCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HttpCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes the W3C trace context of an HTTP request (`traceparent`, `tracestate`), if any, the
/// parent of `span` (the request's span). Nothing when tracing is off.
pub fn set_http_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if signalbox::trace::propagator().is_none() || !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HttpCarrier(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace and span ids of the current span, as lowercase hex, when it is traced.
pub fn current_ids() -> Option<(String, String)> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Option<TelemetryConfig>, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(config(&[]).ok().flatten(), None);
        assert_eq!(
            config(&[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " ")
            ])
            .ok()
            .flatten(),
            None
        );
        assert_eq!(
            config(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])
            .ok()
            .flatten(),
            None
        );
        assert_eq!(
            config(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces"
                ),
                ("OTEL_TRACES_EXPORTER", "none")
            ])
            .ok()
            .flatten(),
            None
        );
    }

    #[test]
    fn on_with_an_endpoint() {
        let on = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            .ok()
            .flatten();
        assert_eq!(
            on.and_then(|c| c.service_name).as_deref(),
            Some(DEFAULT_SERVICE_NAME)
        );
        let named = config(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=x,service.name=n",
            ),
        ])
        .ok()
        .flatten();
        assert_eq!(named.map(|c| c.service_name), Some(None));
        assert!(matches!(
            config(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ]),
            Err(TelemetryError::UnsupportedProtocol(_))
        ));
    }
}
