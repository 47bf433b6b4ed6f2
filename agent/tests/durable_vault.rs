//! The vault and the router registry: sealing, key sources and permissions, and that no
//! password ever reaches the data folder in clear.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tikfleet_agent::registry::{Registry, RegistryError};
use tikfleet_agent::router::RouterEndpoint;
use tikfleet_agent::router::TlsMode;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_agent::vault::{
    KEY_FILE, KeySource, KeySources, Vault, VaultError, VaultKey, load_key,
};
use tikfleet_shared::{ErrorCode, RouterId, Secret, TenantId};

const TIMEOUT: Duration = Duration::from_secs(60);

fn sources(dir: &Path) -> KeySources {
    KeySources {
        env: None,
        credentials_dir: None,
        data_dir: dir.to_owned(),
    }
}

#[test]
fn seal_unseal_round_trip_with_fresh_nonces() {
    let vault = Vault::new(&VaultKey::generate());
    let router = RouterId::new();
    for password in [
        "",
        "hunter2",
        "пароль with spaces and ünïcode",
        &"x".repeat(4096),
    ] {
        let a = vault.seal(router, &Secret::new(password)).unwrap();
        let b = vault.seal(router, &Secret::new(password)).unwrap();
        assert_ne!(a, b, "every seal uses a new nonce");
        assert_eq!(vault.unseal(router, &a).unwrap().expose(), password);
        assert_eq!(vault.unseal(router, &b).unwrap().expose(), password);
    }
}

#[test]
fn wrong_key_fails() {
    let router = RouterId::new();
    let sealed = Vault::new(&VaultKey::generate())
        .seal(router, &Secret::new("pw"))
        .unwrap();
    let err = Vault::new(&VaultKey::generate())
        .unseal(router, &sealed)
        .unwrap_err();
    assert!(matches!(err, VaultError::Unseal { .. }));
    assert!(!err.to_string().contains("pw"));
}

#[test]
fn ciphertext_moved_to_another_router_fails() {
    let vault = Vault::new(&VaultKey::generate());
    let (a, b) = (RouterId::new(), RouterId::new());
    let sealed = vault.seal(a, &Secret::new("pw")).unwrap();
    assert!(matches!(
        vault.unseal(b, &sealed),
        Err(VaultError::Unseal { router }) if router == b
    ));
}

#[test]
fn key_file_is_created_with_mode_0600_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, source) = load_key(&sources(dir.path())).unwrap();
    let path = dir.path().join(KEY_FILE);
    assert_eq!(source, KeySource::CreatedKeyFile(path.clone()));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (again, source) = load_key(&sources(dir.path())).unwrap();
    assert_eq!(source, KeySource::KeyFile(path));
    let router = RouterId::new();
    let sealed = Vault::new(&key).seal(router, &Secret::new("pw")).unwrap();
    assert_eq!(
        Vault::new(&again).unseal(router, &sealed).unwrap().expose(),
        "pw"
    );
}

#[test]
fn a_group_or_world_readable_key_file_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    load_key(&sources(dir.path())).unwrap();
    let path = dir.path().join(KEY_FILE);
    for mode in [0o644, 0o640, 0o604] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = load_key(&sources(dir.path())).unwrap_err();
        assert!(matches!(err, VaultError::InsecureKeyFile { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("chmod 600"), "{text}");
        assert!(text.contains(&format!("{mode:o}")), "{text}");
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
    }
}

#[test]
fn env_key_wins_over_credential_and_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    load_key(&sources(dir.path())).unwrap(); // a key file exists
    fs::write(creds.path().join("vault-key"), [7u8; 32]).unwrap();
    let hex: String = std::iter::repeat_n("ab", 32).collect();

    let mut all = sources(dir.path());
    all.credentials_dir = Some(creds.path().to_owned());
    all.env = Some(hex.clone().into());
    let (env_key, source) = load_key(&all).unwrap();
    assert_eq!(source, KeySource::Env);

    all.env = None;
    let (cred_key, source) = load_key(&all).unwrap();
    assert_eq!(
        source,
        KeySource::Credential(creds.path().join("vault-key"))
    );

    // The keys really are the ones given: each opens what a vault of that key sealed.
    let router = RouterId::new();
    let check = |key: &VaultKey, expected: &VaultKey| {
        let sealed = Vault::new(expected)
            .seal(router, &Secret::new("pw"))
            .unwrap();
        assert!(Vault::new(key).unseal(router, &sealed).is_ok());
    };
    check(&env_key, &VaultKey::parse(&hex, "test").unwrap());
    check(&cred_key, &VaultKey::from_bytes([7u8; 32]));

    all.env = Some("not a key".into());
    let err = load_key(&all).unwrap_err();
    assert!(err.to_string().contains("TIKFLEET_VAULT_KEY"), "{err}");
    assert!(!err.to_string().contains("not a key"), "{err}");
}

fn new_router(name: &str, password: &str) -> RouterEndpoint {
    RouterEndpoint {
        id: RouterId::new(),
        tenant: TenantId::new(),
        name: name.to_owned(),
        host: "192.0.2.1".to_owned(),
        api_port: 8729,
        ssh_port: 22,
        tls: TlsMode::Pin {
            sha256: "ab".repeat(32),
        },
        username: "tikfleet".to_owned(),
        password: Secret::new(password),
    }
}

#[tokio::test]
async fn registry_add_list_get_remove_and_duplicate_names() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path().join("db"))).unwrap();
        let registry = Registry::open(&store, Vault::new(&VaultKey::generate())).unwrap();

        let core = new_router("core-1", "pw-core");
        let edge = RouterEndpoint {
            tls: TlsMode::Verify {
                ca_pem: "-----BEGIN CERTIFICATE-----".to_owned(),
                server_name: "edge.example".to_owned(),
            },
            ..new_router("edge-1", "pw-edge")
        };
        registry.add(core.clone()).await.unwrap();
        registry.add(edge.clone()).await.unwrap();

        let err = registry
            .add(new_router("core-1", "other"))
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::DuplicateName { .. }));
        assert_eq!(err.code(), ErrorCode::DuplicateName);

        let mut names: Vec<_> = registry
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["core-1", "edge-1"]);

        let endpoint = registry.get(edge.id).unwrap();
        assert_eq!(endpoint.password.expose(), "pw-edge");
        assert_eq!(endpoint.tls, edge.tls);
        assert_eq!((endpoint.api_port, endpoint.ssh_port), (8729, 22));
        assert!(!format!("{endpoint:?}").contains("pw-edge"));
        assert_eq!(
            registry.find_by_name("core-1").unwrap().map(|r| r.id),
            Some(core.id)
        );

        registry
            .set_password(core.id, &Secret::new("pw-new"))
            .await
            .unwrap();
        assert_eq!(registry.get(core.id).unwrap().password.expose(), "pw-new");

        registry.remove(core.id).await.unwrap();
        assert!(matches!(
            registry.get(core.id),
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            registry.remove(core.id).await,
            Err(RegistryError::NotFound { .. })
        ));
        // The name is free again.
        registry.add(new_router("core-1", "pw-3")).await.unwrap();
        assert_eq!(registry.list().unwrap().len(), 2);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn registry_survives_reopen_and_key_rotation() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let old = VaultKey::generate();
        let new = VaultKey::generate();
        let router = new_router("core-1", "pw-core");
        {
            let store = Store::open(&StoreConfig::new(&path)).unwrap();
            let mut registry = Registry::open(&store, Vault::new(&old)).unwrap();
            registry.add(router.clone()).await.unwrap();
            assert_eq!(registry.rotate_key(Vault::new(&new)).await.unwrap(), 1);
            assert_eq!(
                registry.get(router.id).unwrap().password.expose(),
                "pw-core"
            );
        }
        let store = Store::open(&StoreConfig::new(&path)).unwrap();
        let with_old = Registry::open(&store, Vault::new(&old)).unwrap();
        assert!(matches!(
            with_old.get(router.id),
            Err(RegistryError::Vault(VaultError::Unseal { .. }))
        ));
        let with_new = Registry::open(&store, Vault::new(&new)).unwrap();
        assert_eq!(
            with_new.get(router.id).unwrap().password.expose(),
            "pw-core"
        );
    })
    .await
    .expect("test timed out");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn no_password_bytes_anywhere_in_the_data_folder() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let passwords: Vec<String> = (0..20)
            .map(|i| format!("Sup3r-Secret-Router-Password-{i:03}"))
            .collect();
        {
            let (key, _) = load_key(&sources(dir.path())).unwrap();
            let store = Store::open(&StoreConfig::new(dir.path().join("db"))).unwrap();
            let registry = Registry::open(&store, Vault::new(&key)).unwrap();
            for (i, pw) in passwords.iter().enumerate() {
                registry
                    .add(new_router(&format!("r{i}"), pw))
                    .await
                    .unwrap();
            }
            // Replace a few, so old values have had a chance to linger in the log.
            for info in registry.list().unwrap().iter().take(5) {
                let pw = registry.get(info.id).unwrap().password;
                registry
                    .set_password(info.id, &Secret::new(format!("{}-v2", pw.expose())))
                    .await
                    .unwrap();
            }
        }
        let mut all = Vec::new();
        files(dir.path(), &mut all);
        assert!(all.len() > 2, "{all:?}");
        let mut scanned = 0;
        for file in &all {
            let bytes = fs::read(file).unwrap();
            scanned += bytes.len();
            for pw in &passwords {
                assert!(
                    !contains(&bytes, pw.as_bytes()),
                    "{} contains a password",
                    file.display()
                );
            }
            // The common prefix alone must not show up either.
            assert!(!contains(&bytes, b"Sup3r-Secret"), "{}", file.display());
        }
        assert!(scanned > 0);
    })
    .await
    .expect("test timed out");
}
