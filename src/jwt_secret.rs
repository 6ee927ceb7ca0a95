//! `leadflow up` must work with no configuration, yet sessions should survive a restart: so when
//! `JWT_SECRET` is not set it generates one once and keeps it in the state directory.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use rand::RngCore as _;
use secrecy::SecretString;

pub enum Source {
    Environment,
    Stored(PathBuf),
    Generated(PathBuf),
}

/// The secret from `JWT_SECRET` if given, else from `<state_dir>/jwt_secret`, created if missing.
pub fn resolve(
    from_env: Option<SecretString>,
    state_dir: &Path,
) -> anyhow::Result<(SecretString, Source)> {
    if let Some(secret) = from_env {
        return Ok((secret, Source::Environment));
    }
    let path = state_dir.join("jwt_secret");
    match fs::read_to_string(&path) {
        Ok(stored) if !stored.trim().is_empty() => {
            return Ok((
                SecretString::from(stored.trim().to_owned()),
                Source::Stored(path),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }

    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600); // only this user may read it
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(secret.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((SecretString::from(secret), Source::Generated(path)))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn generates_once_then_reuses_the_stored_secret() {
        let dir = std::env::temp_dir().join(format!("leadflow-jwt-{}", uuid_like()));
        let (first, source) = resolve(None, &dir).expect("generated");
        assert!(matches!(source, Source::Generated(_)));
        assert!(first.expose_secret().len() >= 32);
        let (second, source) = resolve(None, &dir).expect("stored");
        assert!(matches!(source, Source::Stored(_)));
        assert_eq!(first.expose_secret(), second.expose_secret());
        let (env, source) = resolve(Some(SecretString::from("x".repeat(40))), &dir).expect("env");
        assert!(matches!(source, Source::Environment));
        assert_eq!(env.expose_secret(), &"x".repeat(40));
        let _ = fs::remove_dir_all(dir);
    }

    fn uuid_like() -> String {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
