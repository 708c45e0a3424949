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
