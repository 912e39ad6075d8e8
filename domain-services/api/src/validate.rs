//! Field validation that collects every failure before answering.

use crate::problem::{FieldError, Problem};

/// Collects field errors; [`Checks::finish`] turns them into one validation problem.
#[derive(Debug, Default)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    /// No failures yet.
    pub fn new() -> Self {
        Checks::default()
    }

    /// Records a failure at `pointer` unless `ok`.
    pub fn check(&mut self, ok: bool, pointer: &str, detail: &str) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                pointer: pointer.to_string(),
                detail: detail.to_string(),
            });
        }
        self
    }

    /// Checks an e-mail address: one `@`, a dot in the domain, no spaces, at most 254 bytes.
    pub fn email(&mut self, pointer: &str, value: &str) -> &mut Self {
        let ok = value.len() <= 254
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        self.check(ok, pointer, "must be an e-mail address")
    }

    /// Checks a new password: 8 to 1024 characters.
    pub fn password(&mut self, pointer: &str, value: &str) -> &mut Self {
        let n = value.chars().count();
        self.check(n >= 8, pointer, "must be at least 8 characters")
            .check(n <= 1024, pointer, "must be at most 1024 characters")
    }

    /// Checks a display name: 1 to 200 characters, no control characters.
    pub fn name(&mut self, pointer: &str, value: &str) -> &mut Self {
        let n = value.trim().chars().count();
        self.check(
            (1..=200).contains(&n) && !value.chars().any(char::is_control),
            pointer,
            "must be 1 to 200 printable characters",
        )
    }

    /// `Ok` when nothing failed, else the validation problem.
    pub fn finish(&mut self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(std::mem::take(&mut self.errors)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_failure() {
        let err = Checks::new()
            .email("/email", "not-an-email")
            .password("/password", "short")
            .name("/name", "")
            .finish()
            .unwrap_err();
        let pointers: Vec<_> = err.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/email", "/password", "/name"]);
    }

    #[test]
    fn accepts_reasonable_input() {
        assert!(
            Checks::new()
                .email("/email", "nurse.joy@clinic.example.org")
                .password("/password", "long enough passphrase")
                .name("/name", "Joy")
                .finish()
                .is_ok()
        );
        for bad in ["a@b", "@x.org", "a b@x.org", "a@@x.org", "a@x.org."] {
            assert!(Checks::new().email("/e", bad).finish().is_err(), "{bad}");
        }
    }
}
