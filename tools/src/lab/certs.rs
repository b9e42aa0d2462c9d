//! The lab's certificates: a CA of its own (`DIR/tls/ca.crt`), and one
//! server certificate signed by it for `localhost` and `127.0.0.1` that
//! every node serves and that pglb can present too (`DIR/tls/server.pem`,
//! certificate then key, as HAProxy's `crt` reads it). A client can then
//! use `sslmode=verify-full sslrootcert=DIR/tls/ca.crt` against the nodes
//! and against a terminating pglb alike. `issue` signs more (other names,
//! client certificates) for tests.

use super::error::LabError;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};
use std::path::{Path, PathBuf};

/// The directory under the lab's.
pub const TLS_DIR: &str = "tls";

fn tls_err(what: &str, e: openssl::error::ErrorStack) -> LabError {
    LabError::Command { what: format!("making the lab's {what}"), detail: e.to_string() }
}

fn key() -> Result<PKey<Private>, openssl::error::ErrorStack> {
    // P-256: quick to make, and every PostgreSQL client speaks it.
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// A certificate for `cn` signed by `issuer` (self-signed CA when `None`).
fn certificate(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>, names: &[&str]) -> Result<X509, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(key)?;
    b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*Asn1Time::days_from_now(30)?)?;
    match issuer {
        None => {
            b.set_issuer_name(&name)?;
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
            b.sign(key, MessageDigest::sha256())?;
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name())?;
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
            b.append_extension(ExtendedKeyUsage::new().server_auth().client_auth().build()?)?;
            if !names.is_empty() {
                let mut san = SubjectAlternativeName::new();
                for n in names {
                    if n.parse::<std::net::IpAddr>().is_ok() {
                        san.ip(n);
                    } else {
                        san.dns(n);
                    }
                }
                let ext = san.build(&b.x509v3_context(Some(ca), None))?;
                b.append_extension(ext)?;
            }
            b.sign(ca_key, MessageDigest::sha256())?;
        }
    }
    Ok(b.build())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

/// Makes the CA and the servers' certificate under `lab_dir/tls`.
pub(crate) fn make(lab_dir: &Path) -> Result<(), LabError> {
    let dir = lab_dir.join(TLS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
    let ca_key = key().map_err(|e| tls_err("CA key", e))?;
    let ca = certificate("pglb lab CA", &ca_key, None, &[]).map_err(|e| tls_err("CA", e))?;
    write(&dir.join("ca.crt"), &ca.to_pem().map_err(|e| tls_err("CA", e))?)?;
    write(&dir.join("ca.key"), &ca_key.private_key_to_pem_pkcs8().map_err(|e| tls_err("CA key", e))?)?;
    let (crt, key) = signed(&ca, &ca_key, "localhost", &["localhost", "127.0.0.1"]).map_err(|e| tls_err("server certificate", e))?;
    write(&dir.join("server.crt"), &crt)?;
    write(&dir.join("server.key"), &key)?;
    write(&dir.join("server.pem"), &[crt, key].concat())
}

/// A certificate and key (PEM) signed by the CA.
fn signed(ca: &X509, ca_key: &PKey<Private>, cn: &str, names: &[&str]) -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
    let key = key()?;
    let crt = certificate(cn, &key, Some((ca, ca_key)), names)?;
    Ok((crt.to_pem()?, key.private_key_to_pem_pkcs8()?))
}

/// Signs another certificate with the lab's CA for `cn` and `names` and
/// writes it with its key to `DIR/tls/FILE.pem` (`crt` form); returns that
/// path. For tests: pglb's own name, a client certificate, a renewal.
pub fn issue(lab_dir: &Path, file: &str, cn: &str, names: &[&str]) -> Result<PathBuf, LabError> {
    let dir = lab_dir.join(TLS_DIR);
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| LabError::io(format!("reading {}", dir.join(name).display()), e));
    let ca = X509::from_pem(&read("ca.crt")?).map_err(|e| tls_err("CA", e))?;
    let ca_key = PKey::private_key_from_pem(&read("ca.key")?).map_err(|e| tls_err("CA key", e))?;
    let (crt, key) = signed(&ca, &ca_key, cn, names).map_err(|e| tls_err("certificate", e))?;
    let path = dir.join(format!("{file}.pem"));
    write(&path, &[crt, key].concat())?;
    Ok(path)
}
