#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::report::effective_settings;
use super::setting::Declared;
use super::settings::SETTINGS;
use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-xyz";

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("signalbox-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0); // best effort cleanup of a temp dir
    }
}

/// The merged layers of an optional file text, variables and flags.
fn layers(
    file: Option<&str>,
    env: &[(&str, &str)],
    overrides: &Overrides,
) -> Result<(Values, Option<PathBuf>), ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let dir = TempDir::new();
    let path = file.map(|text| dir.file("signalbox.toml", text));
    let values = Values::load(path.as_deref(), &|k: &str| env.get(k).cloned(), overrides)?;
    Ok((values, path))
}

fn load(
    file: Option<&str>,
    env: &[(&str, &str)],
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    Config::resolve(&layers(file, env, overrides)?.0)
}

fn setting(key: &str) -> &'static dyn Declared {
    SETTINGS
        .iter()
        .copied()
        .find(|s| s.info().key == key)
        .unwrap_or_else(|| panic!("no setting {key}"))
}

#[test]
fn defaults() {
    let config = load(None, &[], &Overrides::default()).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.database, "sqlite://./signalbox-data/signalbox.db");
    assert_eq!(config.data_dir, std::path::Path::new("./signalbox-data"));
    assert!(!config.require_config);
    assert_eq!(config.auth.access_token_ttl, Duration::from_secs(900));
    assert!(config.auth.jwt_secret.is_none());
    assert!(!config.auth.registration);
}

#[test]
fn the_registry_is_consistent() {
    let mut names = BTreeSet::new();
    for s in SETTINGS {
        let info = s.info();
        for name in [
            Some(info.key),
            info.key_alias,
            Some(info.env),
            info.env_alias,
        ]
        .into_iter()
        .flatten()
        {
            assert!(names.insert(name), "{name} is declared twice");
        }
        assert!(info.env.starts_with("SIGNALBOX_"), "{}", info.env);
        assert!(
            !info.doc.is_empty() && !info.doc.contains('\n'),
            "{}",
            info.key
        );
        if let Some(flag) = info.flag_name() {
            assert!(flag.starts_with("--"), "{flag}");
        }
    }
}

/// `Config::default()`, `OidcConfig::new` and `RateLimitConfig::default()` are the declared
/// defaults, as the loader applies them.
#[test]
fn defaults_are_the_declared_ones() {
    let mut loaded = load(None, &[], &Overrides::default()).unwrap();
    let mut default = Config::default();
    loaded.node = String::new();
    default.node = String::new();
    assert_eq!(format!("{loaded:?}"), format!("{default:?}"));
    let issuer = "https://id.example.com";
    let with_issuer = load(
        None,
        &[("SIGNALBOX_OIDC_ISSUER", issuer)],
        &Overrides::default(),
    )
    .unwrap()
    .oidc
    .unwrap();
    assert_eq!(
        format!("{with_issuer:?}"),
        format!("{:?}", OidcConfig::new(issuer))
    );
}

#[test]
fn precedence_file_env_flags() {
    let file = "listen = \"127.0.0.1:1\"\ndatabase = \"sqlite://a.db\"\n[auth]\naccess_token_ttl = \"5m\"\nregistration = true\n";
    let config = load(
        Some(file),
        &[
            ("SIGNALBOX_DATABASE", "sqlite://b.db"),
            ("SIGNALBOX_ACCESS_TOKEN_TTL", "1h"),
        ],
        &Overrides::default()
            .with("listen", "127.0.0.1:0")
            .with("auth.jwt_secret", SECRET),
    )
    .unwrap();
    assert_eq!(config.listen.port(), 0);
    assert_eq!(config.database, "sqlite://b.db");
    assert_eq!(config.auth.access_token_ttl, Duration::from_secs(3600));
    assert!(config.auth.registration);
    assert_eq!(config.auth.jwt_secret.as_deref(), Some(SECRET));
}

/// For one setting of each kind: the file's value, then the variable's over it, then the
/// flag's over both, each reported with its origin.
#[test]
fn precedence_per_kind() {
    // (key, file value as TOML, variable value, flag value, effective text of each)
    let cases: &[(&str, &str, &str, &str, [&str; 3])] = &[
        (
            "listen",
            "\"127.0.0.1:1\"",
            "127.0.0.1:2",
            "127.0.0.1:3",
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
        ),
        ("auth.issuer", "\"a\"", "b", "c", ["a", "b", "c"]),
        (
            "auth.jwt_private_key",
            "\"/a.pem\"",
            "/b.pem",
            "/c.pem",
            ["/a.pem", "/b.pem", "/c.pem"],
        ),
        (
            "auth.registration",
            "true",
            "false",
            "true",
            ["true", "false", "true"],
        ),
        ("rate_limit.auth_burst", "3", "4", "5", ["3", "4", "5"]),
        (
            "rate_limit.auth_per_second",
            "0.5",
            "2",
            "3.5",
            ["0.5", "2", "3.5"],
        ),
        ("inbox.retention", "\"2d\"", "3h", "90", ["2d", "3h", "90s"]),
        (
            "cors.allowed_origins",
            "[\"https://a.example\"]",
            "https://b.example, https://c.example",
            "https://d.example",
            [
                "https://a.example",
                "https://b.example, https://c.example",
                "https://d.example",
            ],
        ),
        (
            "trusted_proxies",
            "[\"10.0.0.0/8\"]",
            "127.0.0.1",
            "::1",
            ["10.0.0.0/8", "127.0.0.1/32", "::1/128"],
        ),
        (
            "log.format",
            "\"json\"",
            "human",
            "json",
            ["json", "human", "json"],
        ),
        (
            "auth.jwt_algorithm",
            "\"HS256\"",
            "hs256",
            "HS256",
            ["HS256", "HS256", "HS256"],
        ),
    ];
    for (key, file_value, env_value, flag_value, expected) in cases {
        let s = setting(key);
        let env_name = s.info().env;
        let file = match key.split_once('.') {
            Some((table, name)) => format!("[{table}]\n{name} = {file_value}\n"),
            None => format!("{key} = {file_value}\n"),
        };
        let steps: [(&[(&str, &str)], Overrides); 3] = [
            (&[], Overrides::default()),
            (&[(env_name, env_value)], Overrides::default()),
            (
                &[(env_name, env_value)],
                Overrides::default().with(key, *flag_value),
            ),
        ];
        for (i, (env, overrides)) in steps.iter().enumerate() {
            let (values, path) = layers(Some(&file), env, overrides).unwrap();
            let shown = s.effective(&values).unwrap().unwrap();
            assert_eq!(shown, expected[i], "{key} at layer {i}");
            let origin = values.origin(key);
            let expected_origin = match i {
                0 => Origin::File(path.unwrap()),
                1 => Origin::Env(env_name.to_owned()),
                _ => Origin::Flag(s.info().flag_name().unwrap_or_default().to_owned()),
            };
            assert_eq!(origin, expected_origin, "{key} at layer {i}");
        }
    }
}

#[test]
fn flags_of_the_command_line_override() {
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from([
        "signalbox",
        "config",
        "--listen",
        "127.0.0.1:9",
        "--require-config",
        "--node-id",
        "web-9",
    ])
    .unwrap();
    let config = Config::load_from(
        None,
        |k| (k == "SIGNALBOX_LISTEN").then(|| "127.0.0.1:8".to_owned()),
        &cli.overrides(),
    )
    .unwrap();
    assert_eq!(config.listen.port(), 9);
    assert!(config.require_config);
    assert_eq!(config.node, "web-9");
    let unset = crate::cli::Cli::try_parse_from(["signalbox", "serve"]).unwrap();
    assert_eq!(
        unset.overrides().iter().count(),
        0,
        "absent flags set nothing"
    );
}

#[test]
fn validation_messages_name_the_setting_and_its_variable() {
    let cases: &[(&str, &str)] = &[
        ("SIGNALBOX_LISTEN", "nowhere"),
        ("SIGNALBOX_REQUIRE_CONFIG", "maybe"),
        ("SIGNALBOX_DATABASE", "mysql://x"),
        ("SIGNALBOX_NODE_ID", "a b"),
        ("SIGNALBOX_BACKPLANE", "amqp://x"),
        ("SIGNALBOX_CONNECTION_TOKEN_SECRET", "short"),
        ("SIGNALBOX_HEARTBEAT_INTERVAL", "0s"),
        ("SIGNALBOX_NODE_TIMEOUT", "soon"),
        ("SIGNALBOX_CHANNEL_PREFIX", "a/b"),
        ("SIGNALBOX_JWT_ALGORITHM", "none"),
        ("SIGNALBOX_JWT_ALGORITHM", "RS256"),
        ("SIGNALBOX_JWT_PRIVATE_KEY", "/key.pem"),
        ("SIGNALBOX_ACCESS_TOKEN_TTL", "-1"),
        ("SIGNALBOX_REFRESH_TOKEN_TTL", "forever"),
        ("SIGNALBOX_REGISTRATION", "perhaps"),
        ("SIGNALBOX_CORS_ORIGINS", "app.example.com"),
        ("SIGNALBOX_CORS_CREDENTIALS", "2"),
        ("SIGNALBOX_CORS_CHECK_ORIGIN", "x"),
        ("SIGNALBOX_TRUSTED_PROXIES", "example.com"),
        ("SIGNALBOX_RATE_LIMIT", "x"),
        ("SIGNALBOX_RATE_LIMIT_AUTH_BURST", "-1"),
        ("SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND", "0"),
        ("SIGNALBOX_RATE_LIMIT_NEGOTIATE_BURST", "many"),
        ("SIGNALBOX_RATE_LIMIT_NEGOTIATE_PER_SECOND", "fast"),
        ("SIGNALBOX_RATE_LIMIT_LOGIN_FAILURES", "1.5"),
        ("SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF", "0"),
        ("SIGNALBOX_RATE_LIMIT_LOGIN_BACKOFF_MAX", "500ms"),
        ("SIGNALBOX_INBOX_RETENTION", "0"),
        ("SIGNALBOX_OIDC_AUDIENCE", "web"),
        ("SIGNALBOX_OIDC_AUTO_CREATE_USERS", "x"),
        ("SIGNALBOX_OIDC_JWKS_CACHE_TTL", "x"),
        ("SIGNALBOX_OIDC_REDIRECT_URL", "/callback"),
        ("SIGNALBOX_LOG_FORMAT", "xml"),
        ("SIGNALBOX_METRICS_PUBLIC", "x"),
        ("SIGNALBOX_METRICS_TOKEN", "short"),
    ];
    for (name, value) in cases {
        let error = load(None, &[(name, value)], &Overrides::default())
            .err()
            .unwrap_or_else(|| panic!("{name}={value} was accepted"));
        let text = error.to_string();
        // The rules between two settings name the one to change.
        let named = SETTINGS
            .iter()
            .find(|s| text.contains(s.info().key) && text.contains(s.info().env));
        assert!(named.is_some(), "{name}={value}: {text}");
    }
    // The JWT secret's own messages.
    for value in ["short", &"a".repeat(40)] {
        let error = load(
            None,
            &[("SIGNALBOX_JWT_SECRET", value)],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::WeakSecret(_)), "{error}");
        let text = error.to_string();
        assert!(text.contains("auth.jwt_secret") && text.contains("SIGNALBOX_JWT_SECRET"));
    }
    // A wrong type in the file names the setting too.
    let error = load(
        Some("[auth]\nregistration = \"often\"\n"),
        &[],
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("auth.registration (SIGNALBOX_REGISTRATION)"),
        "{error}"
    );
}

#[test]
fn clear_errors() {
    let wildcard = load(
        None,
        &[("SIGNALBOX_CORS_ORIGINS", "*")],
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(wildcard, ConfigError::WildcardWithCredentials));
    let ok = load(
        None,
        &[
            ("SIGNALBOX_CORS_ORIGINS", "*"),
            ("SIGNALBOX_CORS_CREDENTIALS", "false"),
        ],
        &Overrides::default(),
    );
    assert!(ok.is_ok());
    let rs = load(
        None,
        &[("SIGNALBOX_JWT_ALGORITHM", "RS256")],
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(rs.to_string().contains("private key"), "{rs}");
    let db = load(
        None,
        &[("SIGNALBOX_DATABASE", "mysql://root:hunter2@x/db")],
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(!db.to_string().contains("hunter2"), "{db}");
    let empty = load(None, &[], &Overrides::default().with("data_dir", " ")).unwrap_err();
    assert!(empty.to_string().contains("SIGNALBOX_DATA_DIR"), "{empty}");
}

#[test]
fn unknown_file_keys_are_refused() {
    for (file, complaint) in [
        ("nope = 1\n", "unknown key `nope`"),
        (
            "[auth]\njwt_secrett = \"x\"\n",
            "did you mean `auth.jwt_secret`?",
        ),
        ("[nope]\nx = 1\n", "unknown key `nope`"),
        ("auth = 5\n", "`auth` must be a table"),
        ("listen = \n", "invalid configuration file"),
    ] {
        let error = load(Some(file), &[], &Overrides::default()).unwrap_err();
        assert!(
            matches!(error, ConfigError::Parse { .. }),
            "{file}: {error}"
        );
        assert!(error.to_string().contains(complaint), "{file}: {error}");
    }
    let missing = Config::load_from(
        Some(std::path::Path::new("/nonexistent/signalbox.toml")),
        |_| None,
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    let unknown_flag = load(None, &[], &Overrides::default().with("nope", "1")).unwrap_err();
    assert!(unknown_flag.to_string().contains("nope"), "{unknown_flag}");
}

#[test]
fn aliases() {
    let by_file = load(Some("node = \"a\"\n"), &[], &Overrides::default()).unwrap();
    assert_eq!(by_file.node, "a");
    let by_env = load(
        Some("node = \"a\"\n"),
        &[("SIGNALBOX_NODE", "b")],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(by_env.node, "b");
    let canonical_wins = load(
        Some("node = \"a\"\nnode_id = \"c\"\n"),
        &[],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(canonical_wins.node, "c");
    let (values, _) = layers(
        None,
        &[("SIGNALBOX_NODE", "b"), ("SIGNALBOX_NODE_ID", "d")],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(Config::resolve(&values).unwrap().node, "d");
    assert_eq!(
        values.origin("node_id"),
        Origin::Env("SIGNALBOX_NODE_ID".to_owned())
    );
    let (values, _) = layers(None, &[("SIGNALBOX_NODE", "b")], &Overrides::default()).unwrap();
    assert_eq!(
        values.origin("node_id"),
        Origin::Env("SIGNALBOX_NODE".to_owned())
    );
    let flag = load(
        None,
        &[("SIGNALBOX_NODE", "b")],
        &Overrides::default().with("node_id", "e"),
    )
    .unwrap();
    assert_eq!(flag.node, "e");
}

#[test]
fn blank_variables_are_ignored() {
    let config = load(
        Some("listen = \"127.0.0.1:1\"\n"),
        &[("SIGNALBOX_LISTEN", "  ")],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.listen.port(), 1);
}

#[test]
fn the_config_output_names_each_origin() {
    let (values, path) = layers(
        Some("[auth]\nissuer = \"from-file\"\n"),
        &[("SIGNALBOX_ACCESS_TOKEN_TTL", "1h")],
        &Overrides::default().with("listen", "127.0.0.1:0"),
    )
    .unwrap();
    let out = effective_settings(&values).unwrap();
    let line = |key: &str| {
        out.lines()
            .find(|l| l.split(' ').next() == Some(key))
            .unwrap_or_else(|| panic!("no line for {key} in\n{out}"))
            .to_owned()
    };
    let path = path.unwrap();
    assert!(line("auth.issuer").contains("from-file"), "{out}");
    assert!(
        line("auth.issuer").ends_with(&format!("(file {})", path.display())),
        "{out}"
    );
    assert!(line("auth.access_token_ttl").contains("= 1h  (env SIGNALBOX_ACCESS_TOKEN_TTL)"));
    assert!(line("listen").contains("= 127.0.0.1:0  (flag --listen)"));
    assert!(line("admin.role").contains("= admin  (default)"));
    assert!(line("auth.jwt_secret").contains("= (unset)  (default)"));
    assert_eq!(out.lines().count(), SETTINGS.len());
}

#[test]
fn the_config_output_never_contains_a_secret() {
    let dir = TempDir::new();
    let jwt = "JWT-SECRET-0123456789abcdefghijklmnop";
    let connection = "CONNECTION-SECRET-0123456789abcdefghij";
    let client = "CLIENT-SECRET-GOCSPX-0123456789";
    let metrics = "METRICS-TOKEN-0123456789abcdef";
    let db_password = "DBPASSWORD-hunter2";
    let redis_password = "REDISPASSWORD-swordfish";
    let nats_password = "NATSPASSWORD-opensesame";
    let file = format!(
        "database = \"postgres://signalbox:{db_password}@db.internal/signalbox\"\n\
         [auth]\njwt_secret = \"{jwt}\"\n[metrics]\ntoken = \"{metrics}\"\n"
    );
    let path = dir.file("signalbox.toml", &file);
    let secrets = [
        jwt,
        connection,
        client,
        metrics,
        db_password,
        redis_password,
        nats_password,
    ];
    for backplane in [
        format!("redis://:{redis_password}@redis.internal:6379"),
        format!("nats://a:{nats_password}@n1:4222,nats://b:{nats_password}@n2:4222"),
    ] {
        let env = |name: &str| {
            match name {
                "SIGNALBOX_OIDC_ISSUER" => Some("https://accounts.google.com"),
                "SIGNALBOX_OIDC_CLIENT_ID" => Some("web"),
                "SIGNALBOX_OIDC_CLIENT_SECRET" => Some(client),
                _ => None,
            }
            .map(str::to_owned)
        };
        let overrides = Overrides::default()
            .with("connection_token_secret", connection)
            .with("backplane", backplane.as_str());
        let values = Values::load(Some(&path), &env, &overrides).unwrap();
        let config = Config::resolve(&values).unwrap();
        let out = effective_settings(&values).unwrap();
        for shown in [&out, &config.summary()] {
            for secret in secrets {
                assert!(!shown.contains(secret), "{secret} shown in\n{shown}");
            }
        }
        assert!(out.contains("auth.jwt_secret"), "{out}");
        assert!(out.contains(report::REDACTED), "{out}");
        assert!(out.contains("***@"), "{out}");
    }
}

#[test]
fn cluster_settings() {
    let plain = load(None, &[], &Overrides::default()).unwrap();
    assert!(plain.backplane.is_none());
    let other = load(None, &[], &Overrides::default()).unwrap();
    assert_ne!(plain.node, other.node, "node ids are generated per process");
    let missing = load(
        None,
        &[],
        &Overrides::default().with("backplane", "redis://127.0.0.1:6379"),
    )
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("SIGNALBOX_CONNECTION_TOKEN_SECRET"),
        "{missing}"
    );
    let config = load(
        None,
        &[
            ("SIGNALBOX_CONNECTION_TOKEN_SECRET", SECRET),
            ("SIGNALBOX_NODE_TIMEOUT", "3s"),
            ("SIGNALBOX_HEARTBEAT_INTERVAL", "1s"),
        ],
        &Overrides::default()
            .with("backplane", "nats://127.0.0.1:4222")
            .with("node_id", "web-1"),
    )
    .unwrap();
    assert_eq!(config.backplane.as_deref(), Some("nats://127.0.0.1:4222"));
    assert_eq!(config.node, "web-1");
    assert_eq!(config.cluster.node_timeout, Duration::from_secs(3));
    assert!(config.summary().contains("backplane=nats://"));
    let none = load(
        None,
        &[("SIGNALBOX_BACKPLANE", "none")],
        &Overrides::default(),
    )
    .unwrap();
    assert!(none.backplane.is_none());
    let short = load(
        None,
        &[
            ("SIGNALBOX_NODE_TIMEOUT", "5s"),
            ("SIGNALBOX_HEARTBEAT_INTERVAL", "5s"),
        ],
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(short.to_string().contains("node_timeout"), "{short}");
    let weak = load(
        None,
        &[("SIGNALBOX_CONNECTION_TOKEN_SECRET", "short")],
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        weak.to_string().contains("connection_token_secret"),
        "{weak}"
    );
    assert!(!weak.to_string().contains("JWT"), "{weak}");
}

#[test]
fn rate_limits_and_trusted_proxies() {
    let defaults = load(None, &[], &Overrides::default()).unwrap();
    assert!(defaults.rate_limit.enabled);
    assert_eq!(defaults.rate_limit.auth_burst, 20);
    assert!(defaults.trusted_proxies.is_empty());
    assert!(defaults.cors.check_origin);
    let file = "trusted_proxies = [\"10.0.0.0/8\"]\n[rate_limit]\nauth_burst = 3\nlogin_backoff = \"2s\"\n";
    let config = load(
        Some(file),
        &[
            ("SIGNALBOX_RATE_LIMIT_AUTH_PER_SECOND", "0.5"),
            ("SIGNALBOX_RATE_LIMIT_NEGOTIATE_BURST", "0"),
            ("SIGNALBOX_TRUSTED_PROXIES", "127.0.0.2, ::1"),
            ("SIGNALBOX_CORS_CHECK_ORIGIN", "false"),
        ],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.rate_limit.auth_burst, 3);
    assert!((config.rate_limit.auth_per_second - 0.5).abs() < f64::EPSILON);
    assert_eq!(config.rate_limit.negotiate_burst, 0);
    assert_eq!(config.rate_limit.login_backoff, Duration::from_secs(2));
    assert_eq!(config.trusted_proxies.len(), 2);
    assert!(!config.cors.check_origin);
}

#[test]
fn oidc_client_secret_inline_or_from_a_file_and_never_shown() {
    let issuer = ("SIGNALBOX_OIDC_ISSUER", "https://accounts.google.com");
    let client = ("SIGNALBOX_OIDC_CLIENT_ID", "web-client");
    let secret = "GOCSPX-very-secret-value";
    let config = load(
        None,
        &[
            issuer,
            client,
            ("SIGNALBOX_OIDC_CLIENT_SECRET", secret),
            (
                "SIGNALBOX_OIDC_REDIRECT_URL",
                "https://n.example.com/api/auth/oidc/callback",
            ),
        ],
        &Overrides::default(),
    )
    .unwrap();
    let stored = config.oidc_client.client_secret.as_ref().unwrap();
    assert_eq!(stored.expose(), secret);
    assert_eq!(
        config.oidc_client.redirect_url.as_deref(),
        Some("https://n.example.com/api/auth/oidc/callback")
    );
    assert!(!format!("{config:?}").contains(secret));
    assert!(!config.summary().contains(secret));
    assert!(config.summary().contains("oidc_client_secret=set"));

    let dir = TempDir::new();
    let file = dir.file("secret", &format!("  {secret}\n"));
    let path = file.to_str().unwrap();
    let config = load(
        None,
        &[issuer, client, ("SIGNALBOX_OIDC_CLIENT_SECRET_FILE", path)],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        config.oidc_client.client_secret.as_ref().unwrap().expose(),
        secret
    );

    for (case, env) in [
        (
            "both",
            vec![
                issuer,
                client,
                ("SIGNALBOX_OIDC_CLIENT_SECRET", secret),
                ("SIGNALBOX_OIDC_CLIENT_SECRET_FILE", path),
            ],
        ),
        (
            "missing file",
            vec![
                issuer,
                client,
                ("SIGNALBOX_OIDC_CLIENT_SECRET_FILE", "/nonexistent/secret"),
            ],
        ),
        (
            "no client id",
            vec![issuer, ("SIGNALBOX_OIDC_CLIENT_SECRET", secret)],
        ),
        ("no issuer", vec![("SIGNALBOX_OIDC_CLIENT_SECRET", secret)]),
        (
            "bad redirect",
            vec![issuer, client, ("SIGNALBOX_OIDC_REDIRECT_URL", "/callback")],
        ),
    ] {
        let error = load(None, &env, &Overrides::default()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("oidc."), "{case}: {text}");
        assert!(!text.contains(secret), "{case}: {text}");
    }
}

#[test]
fn the_docs_table_has_a_row_per_setting() {
    let table = docs::settings_table();
    assert_eq!(table.lines().count(), SETTINGS.len() + 2);
    assert!(table.contains(
        "| `node_id` (alias `node`) | `SIGNALBOX_NODE_ID` (alias `SIGNALBOX_NODE`; flag `--node-id`) |"
    ));
    assert!(table.contains("| `auth.access_token_ttl` | `SIGNALBOX_ACCESS_TOKEN_TTL` | `15m` |"));
}
