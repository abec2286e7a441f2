//! The sketches this program can run, and the registry that turns a mesh node into a running
//! [`Node`]. Adding a sketch: one file in this folder, one line in [`builtin`].

pub mod buzzer;
pub mod clock;
pub mod exec;
pub mod iopin;

use std::time::Duration;

use crate::{
    error::Error,
    events::Events,
    mesh::{Mesh, NodeDef, closest, shown},
    runtime::{Node, NodeSpec},
    sketch::{ConfigError, Key, Setup, Sketch, describe},
    wire::Directory,
};

/// The sketches that ship with the program.
pub fn builtin() -> Registry {
    Registry::default()
        .with::<clock::Clock>(
            "clock",
            "ticks on an interval and sends each tick to its peers",
        )
        .with::<iopin::IoPin>(
            "iopin",
            "draws random bits on each message and streams them to its peers",
        )
        .with::<buzzer::Buzzer>("buzzer", "buzzes on a 1, stays quiet on anything else")
        .with::<exec::Exec>("exec", "runs a program as the sketch, in any language")
}

/// One registered sketch.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The name users run it by (`arduino NAME`, `sketch = "NAME"`).
    pub name: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Whether its nodes listen (see [`Sketch::LISTENS`]).
    pub listens: bool,
    /// The config keys it reads (see [`Sketch::CONFIG`]).
    pub config: &'static [Key],
    setup: fn(&mut Setup<'_>, NodeSpec) -> Result<Node, ConfigError>,
}

impl Entry {
    /// Its config keys as an aligned table, one line each: name, default and what it does,
    /// for `arduino SKETCH --help`. Empty for a sketch without config.
    ///
    /// ```
    /// let iopin = arduino::builtin().get("iopin").unwrap().describe_config();
    /// assert!(iopin.starts_with("  chance    0.5  "), "{iopin}");
    /// ```
    pub fn describe_config(&self) -> String {
        describe(self.config)
    }
}

fn set_up<S: Sketch>(setup: &mut Setup<'_>, spec: NodeSpec) -> Result<Node, ConfigError> {
    let sketch = S::setup(setup)?;
    Ok(Node::new(sketch, setup.ticks(), spec))
}

/// The sketches a program knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// Add sketch `S` under `name`.
    pub fn with<S: Sketch>(mut self, name: &'static str, about: &'static str) -> Self {
        self.entries.push(Entry {
            name,
            about,
            listens: S::LISTENS,
            config: S::CONFIG,
            setup: set_up::<S>,
        });
        self
    }

    /// Every registered sketch, in the order added.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The sketch called `name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSketch`], listing the sketches that exist.
    pub fn get(&self, name: &str) -> Result<&Entry, Error> {
        self.entries
            .iter()
            .find(|entry| entry.name == name)
            .ok_or_else(|| Error::UnknownSketch {
                // Cut short: the name may come from a file, and the error is one line.
                name: shown(name),
                known: self.names().join(", "),
            })
    }

    /// The names of the registered sketches.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|entry| entry.name).collect()
    }

    /// Set up node `name` of `mesh`: run its sketch's setup on its config, and gather what the
    /// runtime needs. `secret` is the mesh's secret (see [`Mesh::secret`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSketch`], or [`Error::Mesh`] naming the file and node for a config
    /// key the sketch does not know or a value it cannot use.
    pub fn build(
        &self,
        mesh: &Mesh,
        node: &NodeDef,
        secret: Option<String>,
        events: Events,
    ) -> Result<Node, Error> {
        let entry = self
            .get(node.sketch())
            .map_err(|error| mesh.error(Some(&node.name), error))?;
        let peers = mesh.peers(node)?;
        for target in node.to.iter().filter_map(|peer| mesh.node(peer)) {
            if let Ok(sketch) = self.get(target.sketch())
                && !sketch.listens
            {
                return Err(mesh.error(
                    Some(&node.name),
                    format!(
                        "`to` names {:?}, which runs {}: a sketch that takes no messages",
                        target.name, sketch.name
                    ),
                ));
            }
        }
        let names: Vec<String> = peers.iter().map(|peer| peer.name.clone()).collect();
        let seed = node.seed.unwrap_or_else(rand::random);
        let spec = NodeSpec {
            name: node.name.clone(),
            peers,
            timeout: node.timeout(),
            write_timeout: node.timeout().max(Duration::from_secs(1)),
            max_message: node.max_message(),
            max_connections: node.max_connections(),
            secret,
            tls: mesh.tls.clone(),
            seed,
            events,
            directory: Directory::default(),
        };
        if let Some(key) = node
            .config
            .keys()
            .find(|key| !entry.config.iter().any(|declared| declared.name == *key))
        {
            let names = entry.config.iter().map(|declared| declared.name);
            let known = match closest(key, names.clone()) {
                Some(near) => format!("did you mean `{near}`?"),
                None if entry.config.is_empty() => "it takes no config".to_owned(),
                None => format!("it takes: {}", names.collect::<Vec<_>>().join(", ")),
            };
            return Err(mesh.error(
                Some(&node.name),
                format!(
                    "config key `{}` is not known to sketch {} ({known})",
                    shown(key),
                    entry.name
                ),
            ));
        }
        let mut setup = Setup::new(entry.config, &node.name, &node.config, seed, &names)
            .with_timeout(node.timeout());
        let built = (entry.setup)(&mut setup, spec);
        let mut built = built.map_err(|error| mesh.error(Some(&node.name), error))?;
        if let Some(input) = &node.input {
            let shape = input
                .shape()
                .map_err(|error| mesh.error(Some(&node.name), error))?;
            built = built
                .shaped(shape)
                .map_err(|error| mesh.error(Some(&node.name), error))?;
        }
        Ok(built)
    }

    /// Set up every node of `mesh`, as a check that all of it can run.
    ///
    /// # Errors
    ///
    /// The first error [`Registry::build`] finds.
    pub fn check(&self, mesh: &Mesh) -> Result<(), Error> {
        for node in &mesh.nodes {
            self.build(mesh, node, None, Events::new(&node.name))?;
        }
        Ok(())
    }
}

/// The README's worked sketch, compiled as a file of this folder, as the README says to.
#[cfg(test)]
#[path = "../../examples/thermometer.rs"]
mod readme_sketch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_sketch_builds_here_and_registers_with_one_line() {
        let registry = builtin().with::<super::readme_sketch::Thermometer>(
            "thermometer",
            "reports a drifting temperature",
        );
        let mesh =
            Mesh::parse("[[node]]\nname = \"thermometer\"\nport = 1\n", "mesh.toml").unwrap();
        registry.check(&mesh).unwrap();
        let mut names = builtin().names();
        names.push("thermometer");
        assert_eq!(registry.names(), names);
        let config = registry.get("thermometer").unwrap().describe_config();
        assert_eq!(config.lines().count(), 2, "{config}");
    }

    /// Every built-in sketch sets up from the defaults its `CONFIG` declares, written into a
    /// mesh file as `--help` shows them: they are valid TOML of the types the sketch reads,
    /// and the sketch reads no key it does not declare. Only a required key may be missing.
    #[test]
    fn every_sketch_sets_up_from_its_declared_defaults() {
        let registry = builtin();
        assert!(!registry.entries().is_empty());
        for entry in registry.entries() {
            let mut text = format!(
                "[[node]]\nname = \"n\"\nsketch = \"{}\"\nport = 1\nto = [\"ws://127.0.0.1:2\"]\n[node.config]\n",
                entry.name
            );
            for key in entry.config {
                if let Some(default) = key.default_text() {
                    text.push_str(&format!("{} = {default}\n", key.name));
                }
            }
            let described = entry.describe_config();
            assert_eq!(described.lines().count(), entry.config.len(), "{described}");
            for key in entry.config {
                assert!(described.contains(key.about), "{}: {described}", entry.name);
            }
            match check(&text) {
                Ok(()) => assert!(!entry.config.iter().any(Key::is_required)),
                Err(error) => {
                    let required = entry.config.iter().find(|key| key.is_required());
                    let required =
                        required.map(|key| format!("config key `{}` is required", key.name));
                    assert!(
                        required.is_some_and(|required| error.contains(&required)),
                        "{}: {error}",
                        entry.name
                    );
                }
            }
        }
    }

    fn check(text: &str) -> Result<(), String> {
        let mesh = Mesh::parse(text, "mesh.toml").map_err(|e| e.to_string())?;
        builtin().check(&mesh).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_mesh_sets_up() {
        check(include_str!("../../mesh.toml")).unwrap();
    }

    #[test]
    fn an_unknown_sketch_lists_the_known_ones() {
        let error = check("[[node]]\nname = \"x\"\nsketch = \"led\"\n").unwrap_err();
        let names = builtin().names();
        assert!(names.contains(&"iopin"));
        assert_eq!(
            error,
            format!(
                "mesh.toml: node \"x\": unknown sketch \"led\"; the sketches are: {}",
                names.join(", ")
            )
        );
    }

    #[test]
    fn an_unknown_config_key_is_named_with_the_known_ones() {
        let error = check("[[node]]\nname = \"iopin\"\nport = 1\n[node.config]\nchanse = 0.5\n")
            .unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"iopin\": config key `chanse` is not known to sketch iopin (did you mean `chance`?)"
        );
        let error =
            check("[[node]]\nname = \"iopin\"\nport = 1\n[node.config]\ncolour = 1\n").unwrap_err();
        assert_eq!(
            error,
            "mesh.toml: node \"iopin\": config key `colour` is not known to sketch iopin (it takes: chance, sequence)"
        );
    }

    #[test]
    fn a_config_value_of_the_wrong_type_is_named() {
        let error =
            check("[[node]]\nname = \"iopin\"\nport = 1\n[node.config]\nsequence = \"three\"\n")
                .unwrap_err();
        assert!(error.contains("config key `sequence` must be"), "{error}");
    }
}
