//! A stand-in OpenID Connect issuer: a discovery document and a JWKS whose keys can be published
//! and withdrawn (key rotation), and which can be started late (down when the service starts).

use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub struct FakeIssuer {
    pub url: String,
    keys: Arc<RwLock<Vec<Jwk>>>,
    listener: Option<tokio::net::TcpListener>,
}

impl FakeIssuer {
    /// An issuer serving at once.
    pub async fn start() -> FakeIssuer {
        let mut issuer = Self::reserve().await;
        issuer.serve();
        issuer
    }

    /// An issuer whose address is known but which answers nothing until [`FakeIssuer::serve`].
    pub async fn reserve() -> FakeIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        FakeIssuer {
            url,
            keys: Arc::new(RwLock::new(Vec::new())),
            listener: Some(listener),
        }
    }

    /// Starts answering (connections made meanwhile wait in the listen backlog, so use this
    /// for an issuer that was "down": requests before it are refused by a closed listener
    /// instead, see [`FakeIssuer::down`]).
    pub fn serve(&mut self) {
        use axum::routing::get;
        let listener = self.listener.take().expect("served once");
        let url = self.url.clone();
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/keys"),
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
        });
        let served = self.keys.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let discovery = discovery.clone();
                    async move { axum::Json(discovery) }
                }),
            )
            .route(
                "/keys",
                get(move || {
                    let keys = served.read().unwrap().clone();
                    async move { axum::Json(JwkSet { keys }) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    /// An issuer URL nothing listens on (the port was bound and released), and a way to start
    /// serving on it later.
    pub async fn down() -> FakeIssuer {
        let issuer = Self::reserve().await;
        FakeIssuer {
            listener: None,
            ..issuer
        }
    }

    /// Starts serving at the URL of an issuer made with [`FakeIssuer::down`].
    pub async fn come_up(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_owned();
        self.listener = Some(tokio::net::TcpListener::bind(&addr).await.unwrap());
        self.serve();
    }

    /// Publishes the public half of the EC P-256 key `pem` under `kid`; returns the signing key.
    pub fn publish(&self, pem: &str, kid: &str) -> EncodingKey {
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        self.keys.write().unwrap().push(jwk);
        key
    }

    /// Stops publishing `kid`.
    pub fn withdraw(&self, kid: &str) {
        self.keys
            .write()
            .unwrap()
            .retain(|jwk| jwk.common.key_id.as_deref() != Some(kid));
    }

    /// A token of this issuer for `aud`, naming a verified `email`; `extra` claims override.
    pub fn token(&self, key: &EncodingKey, kid: &str, aud: &str, email: &str) -> String {
        self.token_with(key, kid, aud, email, &json!({}))
    }

    pub fn token_with(
        &self,
        key: &EncodingKey,
        kid: &str,
        aud: &str,
        email: &str,
        extra: &Value,
    ) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let now = signalbox_server::clock::now_secs();
        let mut claims = json!({
            "iss": self.url, "aud": aud, "sub": "external-123", "email": email,
            "email_verified": true, "iat": now, "exp": now + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }
}
