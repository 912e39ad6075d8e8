//! Secrets generated once and kept in the data directory.

use anyhow::{Context, Result};
use nexus_alert_delivery::VapidKey;
use rand::RngCore;
use std::path::Path;

/// The JWT signing secret: from config, or generated into `<data dir>/jwt-secret` on first use
/// (mode 0600) so tokens survive restarts.
pub fn jwt_secret(configured: Option<&str>, data_dir: &Path) -> Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt-secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= nexus_auth::token::MIN_SECRET_LEN {
            return Ok(text.as_bytes().to_vec());
        }
        anyhow::bail!(
            "{} is shorter than {} bytes; delete it to generate a new one",
            path.display(),
            nexus_auth::token::MIN_SECRET_LEN
        );
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &hex).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!("generated a new JWT signing secret in the data dir");
    Ok(hex.into_bytes())
}

/// The VAPID key of Web Push: from config (PEM or base64url PKCS#8), or generated into
/// `<data dir>/vapid-private-key.pem` on first use (mode 0600), so that browsers' push
/// subscriptions (made for its public key) survive restarts.
pub fn vapid_key(configured: Option<&str>, data_dir: &Path) -> Result<VapidKey> {
    if let Some(text) = configured {
        return VapidKey::parse(text).context("vapid.private_key (NEXUS_VAPID_PRIVATE_KEY)");
    }
    let path = data_dir.join("vapid-private-key.pem");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return VapidKey::parse(&text).with_context(|| {
            format!(
                "{} is unusable; delete it to generate a new one",
                path.display()
            )
        });
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let key = VapidKey::generate()?;
    write_private(&path, &key.to_pem())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!("generated a new VAPID key in the data dir");
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = jwt_secret(None, dir.path()).unwrap();
        let b = jwt_secret(None, dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 96);
        assert_eq!(
            jwt_secret(Some("configured-secret-configured-secret"), dir.path()).unwrap(),
            b"configured-secret-configured-secret"
        );
    }

    #[test]
    fn generated_vapid_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = vapid_key(None, dir.path()).unwrap();
        let b = vapid_key(None, dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let pem = std::fs::read_to_string(dir.path().join("vapid-private-key.pem")).unwrap();
        let c = vapid_key(Some(&pem), tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(c.public_key(), a.public_key());
        assert!(vapid_key(Some("not a key"), dir.path()).is_err());
    }
}
