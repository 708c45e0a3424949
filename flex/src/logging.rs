//! Logs go to a file (kubelet reads stdout and stderr as the reply); nothing when it cannot be
//! opened. Panics are logged, not printed.

use crate::settings::Settings;
use std::sync::Mutex;

pub struct LogGuard;

pub fn init(s: &Settings) -> Option<LogGuard> {
    // The default hook prints to stderr, which kubelet would read as part of the reply.
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    if let Some(dir) = s.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .ok()?;
    let level = std::env::var("FLEXDISK_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{level},{}",
        flexdisk_azure::QUIET_DEPENDENCIES
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init()
        .ok()?;
    Some(LogGuard)
}

/// Appends one line in the logger's format without starting the logger: for `init`, which
/// kubelet's prober execs on every scan of the plugin directory and which has nothing else to
/// say (building the filter and subscriber costs more than the whole call).
pub fn plain_line(s: &Settings, text: &str) {
    use std::io::Write;
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
    };
    let file = open().or_else(|_| {
        if let Some(dir) = s.log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        open()
    });
    if let Ok(mut f) = file {
        let _ = f.write_all(format!("{}  INFO flexdisk: {text}\n", utc_now()).as_bytes());
    }
}

/// Now as RFC 3339 UTC with microseconds, as the logger writes it.
fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default())
}

fn utc(now: std::time::Duration) -> String {
    let secs = now.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        now.subsec_micros()
    )
}

/// Whether an option's value must stay out of the log: the secrets kubelet passes on `mount`
/// (`kubernetes.io/secret/<key>`, base64 but not hidden) and anything named like a credential.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.starts_with("kubernetes.io/secret")
        || [
            "secret",
            "token",
            "password",
            "passwd",
            "credential",
            "apikey",
            "api-key",
            "accountkey",
            "privatekey",
            "private-key",
        ]
        .iter()
        .any(|w| k.contains(w))
}

/// The call's arguments as the log shows them: JSON options with secret values replaced, every
/// argument cut to 200 characters. An argument that is not a JSON object is shown as it is
/// unless it could be one cut short (it might hold a secret we cannot find).
pub fn loggable_args(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let shown = match serde_json::from_str::<serde_json::Value>(a) {
                Ok(serde_json::Value::Object(mut m)) => {
                    for (k, v) in m.iter_mut() {
                        if is_secret_key(k) {
                            *v = serde_json::Value::String("<redacted>".into());
                        }
                    }
                    serde_json::Value::Object(m).to_string()
                }
                _ if a.trim_start().starts_with('{') => "<options that are not valid JSON>".into(),
                _ => a.clone(),
            };
            shown.chars().take(200).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_carry_the_loggers_timestamp() {
        let at = |secs: u64, micros: u32| utc(std::time::Duration::new(secs, micros * 1000));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_803_786_510, 123_456), "2027-02-28T03:48:30.123456Z");
        assert_eq!(utc_now().len(), at(0, 0).len());
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("sub/flexdisk.log");
        let s = Settings::from_lookup(&|k| {
            (k == "FLEXDISK_LOG").then(|| log.to_string_lossy().to_string())
        });
        plain_line(&s, "call call=init outcome=Success");
        plain_line(&s, "second");
        let text = std::fs::read_to_string(&log).expect("log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("  INFO flexdisk: call call=init outcome=Success"));
    }

    #[test]
    fn secrets_never_reach_the_log() {
        let args = vec![
            "/var/lib/kubelet/pods/x/volumes/v".to_string(),
            r#"{"diskURI":"/d","kubernetes.io/secret/password":"aHVudGVyMg==","storageAccountKey":"plain","clientSecret":"s3","kubernetes.io/serviceAccount.token":"eyJ"}"#.to_string(),
            r#"{"kubernetes.io/secret/x": "cut"#.to_string(),
        ];
        let shown = loggable_args(&args).join(" ");
        for secret in ["aHVudGVyMg==", "s3", "eyJ", "cut"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("/var/lib/kubelet/pods/x/volumes/v"));
        assert!(
            shown.contains(r#""diskURI":"/d""#),
            "the rest stays readable: {shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
}
