//! Outgoing e-mail of the account flows (verification, password reset).
//!
//! The embedded default writes each message as an RFC 5322 file into a directory (like a
//! development mail catcher); the alerting channels add SMTP.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// A message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// What the mail is for (`verify_email`, `reset_password`), for file names and metrics.
    pub purpose: &'static str,
}

/// Boxed future returned by [`Mailer::send`].
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Sends mail.
pub trait Mailer: Send + Sync + 'static {
    /// Delivers (or durably queues) `mail`.
    fn send(&self, mail: Mail) -> SendFuture<'_>;
}

/// Writes messages as `.eml` files into a directory.
#[derive(Debug, Clone)]
pub struct DirMailer {
    dir: PathBuf,
}

impl DirMailer {
    /// Mail goes into `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirMailer { dir: dir.into() }
    }
}

impl Mailer for DirMailer {
    fn send(&self, mail: Mail) -> SendFuture<'_> {
        Box::pin(async move {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| e.to_string())?;
            let name = format!(
                "{}-{}-{}.eml",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
                mail.purpose,
                uuid::Uuid::new_v4().simple()
            );
            let text = format!(
                "To: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
                mail.to, mail.subject, mail.body
            );
            tokio::fs::write(self.dir.join(name), text)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
