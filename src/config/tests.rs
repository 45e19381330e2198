//! Config parsing and validation: what is accepted, what each mistake says.

use super::*;

const PATH: &str = "/etc/bedrock-keyd/config.toml";

fn ok(text: &str) -> Config {
    match parse(text, Path::new(PATH)) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse(text, Path::new(PATH)) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn probe() {
    for t in [
        "[[key]]\nname = \"a\"\n  [[key.sink]]\n  type = \"file\"\n  pathh = \"/x\"\n",
        "[[key]]\nname = \"a\"\nlifetime = 3600\n",
        "[[key]]\nname = \"a\"\n[[key.snk]]\n",
        "[[key]]\nname = \"a\"\n  [[key.sink]]\n  path = \"/x\"\n",
        "[[key]]\nname = \"a\"\n  [[key.sink]]\n  type = \"file\"\n  path = \"/x\"\n  [[key.sink]]\n  type = \"file\"\n  path = \"/x\"\n",
        "x = [\n",
        "[[key]]\nname = \"a\"\nrefresh_at = \"0.5\"\n",
    ] {
        eprintln!("{}", err(t));
    }
}
