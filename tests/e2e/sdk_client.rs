//! The Docker SDK for Python (7.x, from PyPI, in a virtualenv) as a client:
//! the semantics its own integration suite found missing — exec output
//! without a stream, demuxed and with a TTY; `containers.run` returning the
//! output; `wait` on a restarting container; many unnamed containers; the
//! log driver and runtime it reads back; a load answered line by line; an
//! API 1.41 volume prune; IPAM settings with nulls.

use serde_json::Value;
use vmctl_tests::{require_root, Engine};

const SCRIPT: &str = r#"
import json, sys
import docker

client = docker.DockerClient(base_url=sys.argv[1], version="1.41")
api = client.api
report = {}
box = client.containers.run("hello", "sleep 1000", detach=True)
report["exec"] = box.exec_run("echo hello").output.decode()
out, err = box.exec_run("sh -c 'echo out; echo err >&2'", demux=True).output
report["demux"] = [out.decode(), err.decode()]
report["tty"] = box.exec_run("sh -c 'echo out; echo err >&2'", tty=True).output.decode()
exec_id = api.exec_create(box.id, "sh -c 'echo as-tty'", tty=True)["Id"]
report["tty_multiplexed"] = api.exec_start(exec_id, tty=False, demux=True)[0].decode()
report["code"] = box.exec_run("sh -c 'exit 3'").exit_code
report["run"] = client.containers.run("hello", "echo ran", remove=True).decode()

# wait returns at the first exit even when the policy restarts it.
again = client.containers.run("hello", "sh -c 'sleep 1; exit 2'", detach=True,
                              restart_policy={"Name": "always"})
report["wait"] = again.wait(timeout=60)["StatusCode"]
again.remove(force=True)

names = set()
for _ in range(60):
    c = client.containers.create("hello", "true")
    names.add(c.name)
report["unnamed"] = len(names)

try:
    client.containers.create("hello", "true", log_config={"Type": "asdf", "Config": {}})
    report["log_driver"] = None
except docker.errors.APIError as e:
    report["log_driver"] = e.explanation
report["runtime"] = box.attrs["HostConfig"]["Runtime"]

data = b"".join(client.images.get("hello").save())
report["loaded"] = [i.tags for i in client.images.load(data)]

client.volumes.create("named-vol")
report["pruned"] = api.prune_volumes()["VolumesDeleted"]

pool = docker.types.IPAMPool(subnet="172.29.0.0/16", gateway="172.29.0.1")
net = client.networks.create("ipam-net", ipam=docker.types.IPAMConfig(pool_configs=[pool]))
report["ipam"] = net.attrs["IPAM"]["Config"][0]["Subnet"]
net.remove()
box.remove(force=True)

# Legacy links copy the linked container's environment (ALIAS_ENV_*).
linked = client.containers.run("hello", "sleep 1000", detach=True,
                               environment={"FOO": "1"}, name="linked1")
env = client.containers.run("hello", "env", links={"linked1": "up"}, remove=True)
report["link_env"] = sorted(l for l in env.decode().split() if l.startswith("UP_ENV_"))
parent = client.containers.create("hello", "true", links={"linked1": "up"}, name="parent1")
api.remove_container("parent1/up", link=True)
parent.reload()
report["links_after"] = parent.attrs["HostConfig"]["Links"]
try:
    api.remove_container("parent1/up", link=True)
    report["links_again"] = None
except docker.errors.NotFound as e:
    report["links_again"] = e.explanation
parent.remove()
linked.remove(force=True)

# A connect's MAC address and driver options show before the start.
client.networks.create("opts-net")
plain = client.containers.create("hello", "true")
api.connect_container_to_network(plain.id, "opts-net", mac_address="02:42:ac:11:00:02",
                                 driver_opt={"key1": "a"})
plain.reload()
endpoint = plain.attrs["NetworkSettings"]["Networks"]["opts-net"]
report["endpoint"] = [endpoint["MacAddress"], endpoint["DriverOpts"]]
plain.remove()
client.networks.get("opts-net").remove()

# Detach keys: the engine ends the client's stream, the container's stdin
# stays open (a TTY container; the default keys, then the client's own).
import time
cat = client.containers.run("hello", "cat", detach=True, stdin_open=True, tty=True)
def attach_and_detach(keys, typed):
    params = {"stdin": 1, "stdout": 1, "stream": 1}
    if keys:
        params["detachKeys"] = keys
    raw = api.attach_socket(cat.id, params)._sock
    raw.settimeout(10)
    raw.sendall(b"hi\n")
    time.sleep(0.5)
    echoed = raw.recv(256).decode(errors="replace")
    raw.sendall(typed)
    after = raw.recv(256)
    raw.close()
    return echoed, after.decode(errors="replace")
report["detach_default"] = attach_and_detach(None, b"\x10\x11")
report["detach_custom"] = attach_and_detach("ctrl-a", b"\x01")
cat.reload()
report["detach_status"] = cat.status
exec_id = api.exec_create(cat.id, "cat", stdin=True, tty=True)["Id"]
raw = api.exec_start(exec_id, tty=True, socket=True)._sock
raw.settimeout(10)
raw.sendall(b"\x10\x11")
report["exec_detach"] = raw.recv(256).decode(errors="replace")
cat.remove(force=True)
print(json.dumps(report))
"#;

#[test]
fn the_python_sdk_gets_dockers_semantics() {
    require_root!();
    let python = match vmctl_tests::sdk::python() {
        Ok(python) => python,
        Err(reason) => {
            eprintln!("SKIPPED: no virtualenv with the Docker SDK for Python: {reason}");
            return;
        }
    };
    let engine = Engine::start();
    let report = vmctl_tests::sdk::report(&python, SCRIPT, &engine, &[]);
    assert_eq!(report["exec"], "hello\n", "{report}");
    assert_eq!(report["demux"], serde_json::json!(["out\n", "err\n"]));
    assert_eq!(report["tty"], "out\r\nerr\r\n");
    assert_eq!(report["tty_multiplexed"], "as-tty\r\n");
    assert_eq!(report["code"], 3);
    assert_eq!(report["run"], "ran\n");
    assert_eq!(report["wait"], 2);
    assert_eq!(report["unnamed"], 60);
    assert_eq!(
        report["log_driver"],
        "logger: no log driver named 'asdf' is registered"
    );
    assert_eq!(report["runtime"], "runc");
    assert_eq!(report["loaded"], serde_json::json!([["hello:latest"]]));
    assert_eq!(report["pruned"], serde_json::json!(["named-vol"]));
    assert_eq!(report["ipam"], "172.29.0.0/16");
    assert_eq!(
        report["link_env"],
        serde_json::json!(["UP_ENV_FOO=1"]),
        "{report}"
    );
    assert_eq!(report["links_after"], Value::Null, "{report}");
    assert_eq!(report["links_again"], "No such container: parent1/up");
    assert_eq!(
        report["endpoint"],
        serde_json::json!(["02:42:ac:11:00:02", {"key1": "a"}]),
        "{report}"
    );
    for case in ["detach_default", "detach_custom"] {
        let echoed = report[case][0].as_str().unwrap_or_default();
        assert!(echoed.contains("hi"), "{case}: {report}");
        assert_eq!(
            report[case][1], "",
            "{case}: the stream did not end: {report}"
        );
    }
    // Both attaches found cat still reading: stdin was never closed.
    assert_eq!(report["detach_status"], "running", "{report}");
    assert_eq!(report["exec_detach"], "", "{report}");
}
