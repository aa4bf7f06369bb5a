//! `bunraku new`: a guest crate that builds and runs as it is.
//!
//! The crate depends on the `sdk/` of the checkout this binary was built from (by absolute
//! path, fixed at compile time), copies its `rust-toolchain.toml`, and is a workspace of its own
//! so it can be created anywhere, even inside another workspace.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bunraku_runtime::manifest::validate_actor_name;

use crate::{NewArgs, usage};

/// The SDK crate of this checkout.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk");

/// The repository's toolchain file, which names the wasm target.
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

const LIB_RS: &str = r##"//! The `{name}` actor: greets whoever asks, with a greeting from its configuration.
//!
//! `cargo test` runs the test below natively; `bunraku run .` builds the crate to wasm and
//! runs it as the manifest in `bunraku.toml` says.

use bunraku_sdk::prelude::*;

/// A request: answered with the greeting for `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(reply = String)]
pub struct Greet {
    pub name: String,
}

/// A one-way message: greet with `greeting` from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
pub struct SetGreeting {
    pub greeting: String,
}

/// The actor's `config` table in `bunraku.toml` (missing keys take their defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub greeting: Option<String>,
}

/// The actor's state: one per instance, kept between messages.
#[derive(Default)]
pub struct Greeter {
    greeting: String,
    greeted: u64,
}

#[actor]
impl Greeter {
    async fn on_start(&mut self, ctx: &Ctx, config: Config) {
        self.greeting = config.greeting.unwrap_or_else(|| "hello".into());
        ctx.info(format_args!("{} #{} ready, greeting with {:?}", ctx.name(), ctx.instance(), self.greeting));
    }

    #[handler]
    async fn greet(&mut self, _ctx: &Ctx, msg: Greet) -> String {
        self.greeted += 1;
        format!("{}, {}! (greeting #{})", self.greeting, msg.name, self.greeted)
    }

    #[handler]
    async fn set_greeting(&mut self, ctx: &Ctx, msg: SetGreeting) {
        ctx.info(format_args!("greeting changed from {:?} to {:?}", self.greeting, msg.greeting));
        self.greeting = msg.greeting;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunraku_sdk::testing::TestActor;

    #[test]
    fn greets_with_the_configured_greeting_until_told_otherwise() {
        let mut t = TestActor::<Greeter>::start(serde_json::json!({ "greeting": "hi" }));
        assert_eq!(t.call(&Greet { name: "ann".into() }).unwrap(), "hi, ann! (greeting #1)");

        t.send(&SetGreeting { greeting: "hey".into() }).unwrap();
        // JSON, as `bunraku call` sends it, reaches the same handler.
        let reply = t.call_json("Greet", r#"{"name":"bo"}"#).unwrap();
        assert_eq!(reply, serde_json::json!("hey, bo! (greeting #2)"));
    }

    #[test]
    fn greets_with_hello_without_configuration() {
        let mut t = TestActor::<Greeter>::start_default();
        assert_eq!(t.call(&Greet { name: "cy".into() }).unwrap(), "hello, cy! (greeting #1)");
    }
}
"##;

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A workspace of its own, so the crate builds wherever it lives.
[workspace]

[dependencies]
bunraku-sdk = { path = "{sdk}" }
# The SDK's derives expand to code that names `serde`.
serde = { version = "1", features = ["derive"] }

[dev-dependencies]
serde_json = "1"

[profile.release]
panic = "abort"
# Link-time optimisation in one codegen unit inlines the SDK into the handlers: about 1.5 times
# faster message handling than without, in bunraku's own benchmarks.
codegen-units = 1
lto = true
"#;

const MANIFEST: &str = r#"# Run it:          bunraku run .
# Then, elsewhere: bunraku call {name} '{"name":"ann"}' --type Greet
#                  bunraku send {name} '{"greeting":"hey"}' --type SetGreeting
# Reference: {docs}

[[actor]]
name = "{name}"
module = "."                     # this crate, built to wasm when stale
config = { greeting = "hello" }

# What the actor may do besides answering: nothing unless granted here.
[actor.grants]
send = []                        # actors it may send to or call, e.g. ["billing"]; "*" for all
publish = []                     # subjects it may publish to, as patterns, e.g. ["greetings.>"]
subscribe = []                   # patterns it may subscribe to at run time
storage = false                  # whether it may save and load its state
"#;

const GITIGNORE: &str = "/target\n/.bunraku\n";

/// Checks that `name` works as an actor name and as a crate name.
fn check_name(name: &str) -> Result<()> {
    validate_actor_name(name)
        .map_err(|reason| usage(format!("`{name}` cannot be the name: {reason}")))?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(usage(format!(
            "`{name}` cannot be the name: a crate name starts with a letter"
        )));
    }
    Ok(())
}

fn fill(template: &str, name: &str) -> String {
    let sdk = std::fs::canonicalize(SDK_DIR).unwrap_or_else(|_| PathBuf::from(SDK_DIR));
    let docs = sdk.parent().unwrap_or(&sdk).join("docs/manifest.md");
    template
        .replace("{name}", name)
        .replace(
            "{sdk}",
            &sdk.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\""),
        )
        .replace("{docs}", &docs.display().to_string())
}

pub(crate) fn new(args: &NewArgs) -> Result<()> {
    check_name(&args.name)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(usage(format!(
            "{} already exists and is not empty: choose another --path, or remove it",
            dir.display()
        )));
    }
    if !Path::new(SDK_DIR).join("Cargo.toml").is_file() {
        anyhow::bail!(
            "the bunraku SDK is not at {SDK_DIR} any more (this binary was built from that checkout): rebuild bunraku from a checkout that has sdk/"
        );
    }
    let files = [
        ("Cargo.toml", fill(CARGO_TOML, &args.name)),
        ("src/lib.rs", fill(LIB_RS, &args.name)),
        ("bunraku.toml", fill(MANIFEST, &args.name)),
        ("rust-toolchain.toml", TOOLCHAIN.to_owned()),
        (".gitignore", GITIGNORE.to_owned()),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let shown = dir.display();
    out!("created actor crate `{}` in {shown}", args.name)?;
    out!()?;
    out!("next:")?;
    let steps = [
        (
            format!("cd {shown} && cargo test"),
            "the test runs natively",
        ),
        (format!("bunraku run {shown}"), "build to wasm and run"),
        (
            format!(
                "bunraku call {} '{{\"name\":\"ann\"}}' --type Greet",
                args.name
            ),
            "from another terminal",
        ),
    ];
    let width = steps.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (command, why) in steps {
        out!("  {command:<width$}  # {why}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_actor_and_crate() {
        assert!(check_name("greeter").is_ok());
        assert!(check_name("my-actor_2").is_ok());
        for bad in ["Greeter", "2fast", "a.b", "", "-x"] {
            let err = check_name(bad).unwrap_err();
            assert!(err.is::<crate::Usage>(), "{bad}: {err}");
        }
    }

    #[test]
    fn templates_are_filled() {
        let toml = fill(CARGO_TOML, "greeter");
        assert!(toml.contains("name = \"greeter\""));
        assert!(!toml.contains('{') || toml.contains("bunraku-sdk = { path"));
        assert!(fill(LIB_RS, "greeter").contains("The `greeter` actor"));
        assert!(TOOLCHAIN.contains("wasm32-wasip1"));
    }

    #[test]
    fn scaffold_manifest_is_valid_and_grants_nothing() {
        let dir = std::env::temp_dir().join(format!("bunraku-scaffold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Cargo.toml"), fill(CARGO_TOML, "greeter")).unwrap();
        let origin = dir.join("bunraku.toml");
        let parsed =
            bunraku_runtime::manifest::Manifest::parse(&fill(MANIFEST, "greeter"), &origin);
        std::fs::remove_dir_all(&dir).unwrap();
        let manifest = parsed.unwrap();
        let greeter = manifest.actor("greeter").unwrap();
        assert_eq!(greeter.grants, bunraku_runtime::Grants::none());
        assert!(manifest.principals.is_empty());
    }
}
