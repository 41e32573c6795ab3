//! Certificates: generating a dev CA and leaf certificates (rcgen), loading PEM files,
//! and reading the principal out of a client certificate.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// Errors while creating, reading or interpreting certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held no usable item or could not be parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rcgen refused to build a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate's DER could not be parsed.
    #[error("cannot parse certificate: {0}")]
    Parse(String),
    /// A certificate carries neither a Common Name nor a usable SAN.
    #[error("certificate has no Common Name and no DNS/URI subject alternative name")]
    NoPrincipal,
}

/// Validity of generated certificates.
pub const DEV_CERT_VALIDITY_DAYS: i64 = 825;

/// A certificate chain and its private key, ready for rustls.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// Loads `NAME.crt` and `NAME.key` from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Identity, CertError> {
        Ok(Identity {
            chain: load_certs(&dir.join(format!("{name}.crt")))?,
            key: load_key(&dir.join(format!("{name}.key")))?,
        })
    }
}

/// Reads every certificate from a PEM file; at least one must be there.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let data = fs::read(path).map_err(|source| CertError::Io { op: "read", path: path.into(), source })?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem { path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(CertError::Pem { path: path.into(), reason: "no CERTIFICATE block found".into() });
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let data = fs::read(path).map_err(|source| CertError::Io { op: "read", path: path.into(), source })?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| CertError::Pem { path: path.into(), reason: e.to_string() })
}

/// The principal a certificate stands for: its subject Common Name, or else its first
/// DNS or URI subject alternative name.
pub fn principal_of(cert: &CertificateDer<'_>) -> Result<String, CertError> {
    use x509_parser::extensions::GeneralName;
    let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(|e| CertError::Parse(e.to_string()))?;
    if let Some(cn) = x509.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        if !cn.is_empty() {
            return Ok(cn.to_owned());
        }
    }
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) => return Ok((*s).to_owned()),
                _ => {}
            }
        }
    }
    Err(CertError::NoPrincipal)
}

/// A generated certificate authority that can sign leaf certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A generated leaf certificate in PEM.
#[derive(Debug, Clone)]
pub struct LeafPem {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A broker: SANs `localhost`, `127.0.0.1`, `::1` plus any given, server auth.
    Server,
    /// A client: CN = the principal name, client auth.
    Client,
}

impl DevCa {
    /// Generates a new CA named `common_name`, valid from now for `days`.
    pub fn generate(common_name: &str, days: i64) -> Result<DevCa, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(DevCa { issuer: Issuer::new(params, key), cert_pem: cert.pem(), key_pem })
    }

    /// Loads a CA from its certificate and key PEM files, to sign more leaves.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<DevCa, CertError> {
        let read =
            |p: &Path| fs::read_to_string(p).map_err(|source| CertError::Io { op: "read", path: p.into(), source });
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(DevCa { issuer, cert_pem, key_pem })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key in PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Signs a leaf certificate valid between `not_before` and `not_after`.
    pub fn issue_with_validity(
        &self,
        kind: LeafKind,
        name: &str,
        extra_sans: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<LeafPem, CertError> {
        let key = KeyPair::generate()?;
        let sans: Vec<String> = match kind {
            LeafKind::Server => ["localhost", "127.0.0.1", "::1"]
                .iter()
                .map(|s| s.to_string())
                .chain(extra_sans.iter().cloned())
                .collect(),
            LeafKind::Client => extra_sans.to_vec(),
        };
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // A broker's certificate also authenticates it as a client: in a cluster, followers
        // connect to leaders with it (its principal needs the `cluster` permission).
        params.extended_key_usages = match kind {
            LeafKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            LeafKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(LeafPem { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a leaf certificate valid from now for `days`.
    pub fn issue(&self, kind: LeafKind, name: &str, extra_sans: &[String], days: i64) -> Result<LeafPem, CertError> {
        let now = OffsetDateTime::now_utc();
        self.issue_with_validity(kind, name, extra_sans, now - Duration::minutes(5), now + Duration::days(days))
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "qwire development");
    dn
}

/// Writes `contents` to `dir/name`, with mode 0600 for private keys.
pub fn write_pem(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, CertError> {
    let path = dir.join(name);
    fs::write(&path, contents).map_err(|source| CertError::Io { op: "write", path: path.clone(), source })?;
    if name.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| CertError::Io {
            op: "chmod",
            path: path.clone(),
            source,
        })?;
    }
    Ok(path)
}

/// What `qwire certs` writes: `ca.crt`/`ca.key`, `broker.crt`/`broker.key`, and
/// `NAME.crt`/`NAME.key` per client. An existing CA in `dir` is reused so new clients
/// can be added; otherwise a new one is made, named `qwire dev CA <12 random hex digits>`
/// so that no two runs make CAs with the same subject.
pub fn generate_dev_certs(dir: &Path, clients: &[String], broker_sans: &[String]) -> Result<Vec<PathBuf>, CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io { op: "create", path: dir.into(), source })?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let mut written = Vec::new();
    let ca = if ca_crt.exists() && ca_key.exists() {
        DevCa::load(&ca_crt, &ca_key)?
    } else {
        // A unique subject per CA: a verifier looks a certificate's issuer up by name, so
        // with one shared name a client of another `qwire certs` CA would be checked against
        // this CA's key and refused as a bad signature (decrypt_error) instead of unknown_ca.
        let mut id = [0u8; 6];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let ca = DevCa::generate(&format!("qwire dev CA {id}"), DEV_CERT_VALIDITY_DAYS)?;
        written.push(write_pem(dir, "ca.crt", ca.cert_pem())?);
        written.push(write_pem(dir, "ca.key", ca.key_pem())?);
        ca
    };
    let broker = ca.issue(LeafKind::Server, "qwire-broker", broker_sans, DEV_CERT_VALIDITY_DAYS)?;
    written.push(write_pem(dir, "broker.crt", &broker.cert_pem)?);
    written.push(write_pem(dir, "broker.key", &broker.key_pem)?);
    for name in clients {
        let leaf = ca.issue(LeafKind::Client, name, &[], DEV_CERT_VALIDITY_DAYS)?;
        written.push(write_pem(dir, &format!("{name}.crt"), &leaf.cert_pem)?);
        written.push(write_pem(dir, &format!("{name}.key"), &leaf.key_pem)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_cert_carries_its_name_as_principal() {
        let dir = tempfile::tempdir().unwrap();
        generate_dev_certs(dir.path(), &["alice".into()], &[]).unwrap();
        let alice = Identity::load(dir.path(), "alice").unwrap();
        assert_eq!(principal_of(&alice.chain[0]).unwrap(), "alice");
        let broker = Identity::load(dir.path(), "broker").unwrap();
        assert_eq!(principal_of(&broker.chain[0]).unwrap(), "qwire-broker");
        // A second run reuses the CA and adds a client.
        let ca_before = fs::read(dir.path().join("ca.crt")).unwrap();
        generate_dev_certs(dir.path(), &["bob".into()], &[]).unwrap();
        assert_eq!(ca_before, fs::read(dir.path().join("ca.crt")).unwrap());
        assert!(dir.path().join("bob.crt").exists());
    }

    #[test]
    fn missing_and_empty_pem_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_certs(&dir.path().join("nope.crt")).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
        fs::write(dir.path().join("empty.crt"), "").unwrap();
        let err = load_certs(&dir.path().join("empty.crt")).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }
}
