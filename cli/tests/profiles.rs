//! Connection settings: flag > environment > profile > default, the config file's
//! locations, clear errors for bad profiles, a real command run from a profile, and
//! shell completions.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::BrokerProcess;

/// `qwire` with a clean environment: HOME in `home`, no QWIRE_* or XDG variables.
fn qwire(home: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qwire"));
    for (k, _) in std::env::vars() {
        if k.starts_with("QWIRE_") || k.starts_with("XDG_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home).envs(env.iter().copied()).args(args).output().unwrap()
}

/// `qwire config show` as `key → (value, source)`.
fn show(home: &Path, env: &[(&str, &str)], args: &[&str]) -> HashMap<String, (String, String)> {
    let out = qwire(home, env, &[&["config", "show"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .map(|l| {
            let (k, rest) = l.split_once(" = ").unwrap();
            let (v, src) = rest.rsplit_once(" (").unwrap();
            (k.to_string(), (v.to_string(), src.trim_end_matches(')').to_string()))
        })
        .collect()
}

fn pair(v: &str, src: &str) -> (String, String) {
    (v.to_string(), src.to_string())
}

const CONFIG: &str = r#"
default_profile = "dev"

[profiles.dev]
server = ["10.0.0.1:7878", "10.0.0.2:7878"]
certs = "dev-certs"
client = "alice"

[profiles.prod]
server = "prod.example:7878"
client = "svc"
connect-timeout-ms = 2500
"#;

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn flag_beats_environment_beats_profile_beats_default() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // No config file: built-in defaults.
    let s = show(h, &[], &[]);
    assert_eq!(s["server"], pair("127.0.0.1:7878", "default"));
    assert_eq!(s["certs"], pair("certs", "default"));
    assert_eq!(s["client"], pair("client", "default"));
    assert_eq!(s["connect-timeout-ms"], pair("10000", "default"));

    // ~/.config/qwire/config.toml with a default profile; certs relative to the file.
    let cfg_dir = h.join(".config").join("qwire");
    write_config(&cfg_dir, CONFIG);
    let s = show(h, &[], &[]);
    assert_eq!(s["profile"].0, "dev");
    assert_eq!(s["server"], pair("10.0.0.1:7878,10.0.0.2:7878", "profile dev"));
    assert_eq!(s["certs"], pair(&cfg_dir.join("dev-certs").display().to_string(), "profile dev"));
    assert_eq!(s["client"], pair("alice", "profile dev"));
    assert_eq!(s["connect-timeout-ms"], pair("10000", "default"));

    // Environment over profile.
    let env = [("QWIRE_SERVER", "env-host:1,env-host:2"), ("QWIRE_CLIENT", "bob")];
    let s = show(h, &env, &[]);
    assert_eq!(s["server"], pair("env-host:1,env-host:2", "environment QWIRE_SERVER"));
    assert_eq!(s["client"], pair("bob", "environment QWIRE_CLIENT"));
    assert_eq!(s["certs"].1, "profile dev");

    // Flags over environment.
    let s = show(h, &env, &["-s", "flag-host:9", "--client", "carol", "--certs", "/flag/certs"]);
    assert_eq!(s["server"], pair("flag-host:9", "flag"));
    assert_eq!(s["client"], pair("carol", "flag"));
    assert_eq!(s["certs"], pair("/flag/certs", "flag"));

    // Choosing a profile: QWIRE_PROFILE, and --profile over it.
    let s = show(h, &[("QWIRE_PROFILE", "prod")], &[]);
    assert_eq!(s["server"], pair("prod.example:7878", "profile prod"));
    assert_eq!(s["connect-timeout-ms"], pair("2500", "profile prod"));
    assert_eq!(s["certs"], pair("certs", "default"), "prod gives no certs");
    let s = show(h, &[("QWIRE_PROFILE", "prod")], &["--profile", "dev"]);
    assert_eq!(s["client"], pair("alice", "profile dev"));
}

#[test]
fn the_config_file_is_found_through_qwire_config_then_xdg_then_home() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let xdg = h.join("xdg");
    let path = |env: &[(&str, &str)]| {
        let out = qwire(h, env, &["config", "path"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(path(&[]), format!("{} (does not exist)", h.join(".config/qwire/config.toml").display()));
    write_config(&xdg.join("qwire"), "[profiles.x]\nclient = \"from-xdg\"\n");
    let xdg_s = xdg.display().to_string();
    assert_eq!(path(&[("XDG_CONFIG_HOME", &xdg_s)]), xdg.join("qwire/config.toml").display().to_string());
    let s = show(h, &[("XDG_CONFIG_HOME", &xdg_s)], &["--profile", "x"]);
    assert_eq!(s["client"], pair("from-xdg", "profile x"));
    let other = write_config(&h.join("elsewhere"), "[profiles.x]\nclient = \"from-env-file\"\n");
    let other_s = other.display().to_string();
    assert_eq!(path(&[("XDG_CONFIG_HOME", &xdg_s), ("QWIRE_CONFIG", &other_s)]), other_s);
    let s = show(h, &[("XDG_CONFIG_HOME", &xdg_s), ("QWIRE_CONFIG", &other_s)], &["--profile", "x"]);
    assert_eq!(s["client"].0, "from-env-file");
}

#[test]
fn bad_profiles_are_refused_clearly() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let err = |env: &[(&str, &str)], args: &[&str]| {
        let out = qwire(h, env, args);
        assert_eq!(out.status.code(), Some(8), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&[], &["--profile", "dev", "config", "show"]);
    assert!(e.contains("profile 'dev'") && e.contains("does not exist"), "{e}");
    let cfg = write_config(&h.join("c"), CONFIG);
    let c = cfg.display().to_string();
    let e = err(&[("QWIRE_CONFIG", &c)], &["topics", "list", "--profile", "staging"]);
    assert!(e.contains("no profile 'staging'") && e.contains("dev, prod"), "{e}");
    write_config(&h.join("c"), "[profiles.dev]\nsever = \"typo:1\"\n");
    let e = err(&[("QWIRE_CONFIG", &c)], &["config", "show", "--profile", "dev"]);
    assert!(e.contains("unknown setting 'sever'") && e.contains("server"), "{e}");
    write_config(&h.join("c"), "[profiles.dev]\nclient = [\"a\", \"b\"]\n");
    let e = err(&[("QWIRE_CONFIG", &c)], &["config", "show", "--profile", "dev"]);
    assert!(e.contains("'client' must be a string"), "{e}");
    write_config(&h.join("c"), "[profiles.dev\n");
    let e = err(&[("QWIRE_CONFIG", &c)], &["config", "show"]);
    assert!(e.contains("config.toml"), "{e}");
    // The broker's own --certs is not a client setting.
    let out = qwire(h, &[("QWIRE_CERTS", "/nope")], &["broker", "--help"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("QWIRE_CERTS"));
}

#[test]
fn a_client_command_reaches_the_broker_named_by_its_profile() {
    let mut b = BrokerProcess::new("");
    b.start();
    let home = tempfile::tempdir().unwrap();
    let text = format!(
        "default_profile = \"local\"\n[profiles.local]\nserver = \"{}\"\ncerts = \"{}\"\nclient = \"alice\"\n",
        b.addr,
        b.certs.path().display()
    );
    let cfg = write_config(&home.path().join("cfg"), &text);
    let c = cfg.display().to_string();
    let env = [("QWIRE_CONFIG", c.as_str())];
    let out = qwire(home.path(), &env, &["topics", "create", "from-profile", "--partitions", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = qwire(home.path(), &env, &["topics", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-profile"), "{out:?}");
    // The environment overrides the profile: an unknown client certificate is refused.
    let out = qwire(home.path(), &[env[0], ("QWIRE_CLIENT", "nobody")], &["topics", "list"]);
    assert_eq!(out.status.code(), Some(8), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = qwire(home.path(), &[], &["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["produce", "consume", "topics", "bench", "server", "profile", "log-format"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        if shell == "bash" {
            let file = home.path().join("qwire.bash");
            std::fs::write(&file, script.as_bytes()).unwrap();
            let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
        }
    }
    let out = qwire(home.path(), &[], &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
