//! `expand = N` in the mesh file: one entry becomes N numbered copies, which `check` shows on
//! one line, `up` runs side by side, and a single node run picks one of by name.

mod common;

use common::{MeshFile, Process, arduino, free_port, ws};

/// 200 clock -> iopin -> buzzer chains, written as three entries.
const CHAINS: &str = r#"
[[node]]
name = "tick"
sketch = "clock"
expand = 200
to = ["pin-{i}"]
[node.config]
tacks = 3
delay = 0

[[node]]
name = "pin"
sketch = "iopin"
expand = 200
seed = 1
to = ["bell-{i}"]

[[node]]
name = "bell"
sketch = "buzzer"
expand = 200
[node.config]
sound = "bell {i}"
"#;

/// `arduino check` shows each entry with `expand` as one line, its copies' peers as a
/// pattern, and which nodes have no port; `--all` shows every copy.
#[test]
fn check_shows_the_copies_of_an_entry_on_one_line() {
    let mesh = MeshFile::new(&format!(
        "{CHAINS}\n[[node]]\nname = \"hub\"\nsketch = \"buzzer\"\nport = 9000\n\
         [[node]]\nname = \"sensor\"\nsketch = \"iopin\"\nexpand = 1000\nport = 10000\n\
         to = [\"hub\"]\n"
    ));
    let ran = arduino(&["check", "--mesh", mesh.arg()], &[]);
    assert!(ran.ok, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            &format!("{}: 1601 nodes, 1400 links", mesh.arg())[..],
            "tick-1 ... tick-200 (200 clock nodes, from \"tick\") -> pin-{i}",
            "  pin-1 ... pin-200 (200 iopin nodes, from \"pin\") -> bell-{i}",
            "    bell-1 ... bell-200 (200 buzzer nodes, from \"bell\")",
            "sensor-1 ... sensor-1000 (1000 iopin nodes, from \"sensor\") ws://127.0.0.1:10000 \
             ... ws://127.0.0.1:10999 -> hub",
            "  hub (buzzer) ws://127.0.0.1:9000",
            "no port, so reached only by the nodes of their own `arduino up`: pin-1 ... pin-200, \
             bell-1 ... bell-200",
        ]
    );
    let all = arduino(&["check", "--all", "--mesh", mesh.arg()], &[]);
    assert!(all.ok, "{}", all.stderr);
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 1601 + 1);
    assert_eq!(
        lines[1..4],
        [
            "tick-1 (clock) -> pin-1",
            "  pin-1 (iopin) -> bell-1",
            "    bell-1 (buzzer)"
        ]
    );
    assert!(lines.contains(&"sensor-1000 (iopin) ws://127.0.0.1:10999 -> hub"));
}

/// `arduino up` runs every copy: 200 clocks each deliver their 3 ticks through their own iopin
/// to their own buzzer, and the mesh exits 0 once they are done.
#[test]
fn up_runs_every_copy_and_delivers_every_tick() {
    let mesh = MeshFile::new(CHAINS);
    let ran = arduino(&["up", "--mesh", mesh.arg()], &[]);
    assert!(ran.ok, "{}", ran.stderr.lines().last().unwrap_or_default());
    let count = |needle: &str| ran.stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("600 nodes on"),
        1,
        "{}",
        ran.stderr.lines().next().unwrap_or_default()
    );
    // 200 iopins handle 3 ticks each and 200 buzzers 3 x 3 bits; 600 ticks and 1800 bits
    // are sent, and every one acknowledged.
    assert_eq!(
        count(
            "600 nodes that failed nothing: handled 2400 messages, ran 600 ticks; sent 2400 to \
             peers, 2400 acknowledged"
        ),
        1,
        "{}",
        ran.stderr.lines().last().unwrap_or_default()
    );
    // Each copy runs its own number's sound.
    assert!(ran.stderr.contains("[ bell-7 ] > bell 7"));
    assert!(!ran.stderr.contains("[ bell-7 ] > bell 8"));
}

/// `arduino iopin --name pin-3` runs copy 3 alone: on the entry's port plus 2, streaming to
/// bell-3 on its own port; `--name pin` is refused, naming the copies.
#[test]
fn one_copy_runs_on_its_own_by_name() {
    // Copy 3 is on the entry's port plus 2: let that be the free one.
    let (bell, pin) = (free_port(), free_port());
    let mesh = MeshFile::new(&format!(
        "[[node]]\nname = \"pin\"\nsketch = \"iopin\"\nexpand = 3\nport = {}\n\
         to = [\"bell-{{i}}\"]\n[node.config]\nchance = 0.0\nsequence = 1\n\
         [[node]]\nname = \"bell\"\nsketch = \"buzzer\"\nexpand = 3\nport = {}\n\
         [node.config]\nsound = \"bell {{i}} rings\"\n",
        pin - 2,
        bell - 2
    ));
    let (mut buzzer, at) =
        Process::node(&["buzzer", "--name", "bell-3", "--mesh", mesh.arg()], &[]);
    assert_eq!(at.port(), bell);
    let (mut iopin, at) = Process::node(&["iopin", "--name", "pin-3", "--mesh", mesh.arg()], &[]);
    assert_eq!(at.port(), pin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = ws::connect(&format!("ws://127.0.0.1:{pin}/datafeed")).await;
        assert_eq!(ws::ask(&mut client, "0").await, "acknowledged");
    });
    // chance = 0: the one bit drawn is 1, which bell-3 answers with its own sound.
    iopin.wait_for("[ pin-3 ] link to bell-3 up");
    buzzer.wait_for("[ bell-3 ] > bell 3 rings");
    let sent = arduino(&["send", "bell-3", "1", "--mesh", mesh.arg()], &[]);
    assert!(sent.ok, "{}", sent.stderr);
    assert_eq!(sent.stdout.trim(), "bell 3 rings");
    for node in [&mut iopin, &mut buzzer] {
        node.signal("TERM");
        assert!(node.wait().success());
    }

    let refused = arduino(&["iopin", "--name", "pin", "--mesh", mesh.arg()], &[]);
    assert!(!refused.ok);
    assert_eq!(
        refused.stderr.trim(),
        format!(
            "arduino: {}: node \"pin\": the entry has `expand = 3`: run one of its copies, \
             pin-1 ... pin-3, with --name",
            mesh.arg()
        )
    );
}
