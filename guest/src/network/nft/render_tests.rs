use nftables::expr::{Expression, NamedExpression, Payload, SetItem};
use nftables::schema::{NfCmd, NfListObject, NfObject, Nftables};
use nftables::stmt::{Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfHook};

use super::super::tests::full_state;
use super::super::{FirewallState, Protocol};
use super::{removal, ruleset};

/// Prints an expression the way `nft list` does (for the forms we render).
fn show(expr: &Expression) -> String {
    match expr {
        Expression::String(s) if s.starts_with("br-") => format!("\"{s}\""),
        Expression::String(s) => s.to_string(),
        Expression::Number(n) => n.to_string(),
        Expression::Named(NamedExpression::Meta(meta)) => format!("{:?}", meta.key).to_lowercase(),
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
            format!("{} {}", f.protocol, f.field)
        }
        Expression::Named(NamedExpression::Prefix(p)) => format!("{}/{}", show(&p.addr), p.len),
        Expression::Named(NamedExpression::Fib(fib)) => {
            assert_eq!(fib.flags.len(), 1);
            format!("fib daddr {:?}", fib.result).to_lowercase()
        }
        Expression::Named(NamedExpression::CT(ct)) => format!("ct {}", ct.key),
        Expression::Named(NamedExpression::Set(items)) => {
            let items: Vec<String> = items
                .iter()
                .map(|item| match item {
                    SetItem::Element(e) => show(e),
                    other => panic!("unexpected set item {other:?}"),
                })
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => panic!("unexpected expression {other:?}"),
    }
}

fn show_statement(stmt: &Statement) -> String {
    match stmt {
        Statement::Match(m) => match m.op {
            Operator::EQ | Operator::IN => format!("{} {}", show(&m.left), show(&m.right)),
            Operator::NEQ => format!("{} != {}", show(&m.left), show(&m.right)),
            ref op => panic!("unexpected operator {op:?}"),
        },
        Statement::Jump(target) => format!("jump {}", target.target),
        Statement::Accept(None) => "accept".into(),
        Statement::Drop(None) => "drop".into(),
        Statement::Masquerade(None) => "masquerade".into(),
        Statement::DNAT(Some(nat)) => {
            let addr = nat.addr.as_ref().map(show).unwrap_or_default();
            let port = nat.port.as_ref().map(show).unwrap_or_default();
            format!("dnat to {addr}:{port}")
        }
        other => panic!("unexpected statement {other:?}"),
    }
}

/// The rules of `chain` as text, in order.
fn rules(doc: &Nftables, chain: &str) -> Vec<String> {
    doc.objects
        .iter()
        .filter_map(|object| match object {
            NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(rule))) if rule.chain == chain => {
                let text: Vec<String> = rule.expr.iter().map(show_statement).collect();
                Some(text.join(" "))
            }
            _ => None,
        })
        .collect()
}

fn count_rules(doc: &Nftables) -> usize {
    doc.objects
        .iter()
        .filter(|o| matches!(o, NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(_)))))
        .count()
}

#[test]
fn empty_state_replaces_the_table_with_bare_base_chains() {
    let doc = ruleset("vmctl", &FirewallState::default());
    let commands: Vec<String> = doc
        .objects
        .iter()
        .map(|object| match object {
            NfObject::CmdObject(NfCmd::Add(NfListObject::Table(t))) => {
                format!("add table {}", t.name)
            }
            NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(t))) => {
                format!("delete table {}", t.name)
            }
            NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(c))) => {
                format!("add chain {}", c.name)
            }
            NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(r))) => {
                format!("add rule {}", r.chain)
            }
            other => panic!("unexpected object {other:?}"),
        })
        .collect();
    assert_eq!(
        commands,
        [
            "add table vmctl",
            "delete table vmctl",
            "add table vmctl",
            "add chain prerouting",
            "add chain output",
            "add chain postrouting",
            "add chain forward",
            "add chain ports",
            "add rule prerouting",
            "add rule output",
        ]
    );
    assert_eq!(
        rules(&doc, "prerouting"),
        ["fib daddr type local jump ports"]
    );
    assert_eq!(rules(&doc, "output"), ["fib daddr type local jump ports"]);
}

#[test]
fn base_chains_have_hooks_priorities_and_accept_policy() {
    let doc = ruleset("vmctl", &FirewallState::default());
    let chains: Vec<_> = doc
        .objects
        .iter()
        .filter_map(|object| match object {
            NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(c))) => {
                Some((c.name.to_string(), c._type, c.hook, c.prio, c.policy))
            }
            _ => None,
        })
        .collect();
    let accept = Some(NfChainPolicy::Accept);
    let nat = Some(NfChainType::NAT);
    assert_eq!(
        chains,
        [
            (
                "prerouting".into(),
                nat,
                Some(NfHook::Prerouting),
                Some(-100),
                accept
            ),
            (
                "output".into(),
                nat,
                Some(NfHook::Output),
                Some(-100),
                accept
            ),
            (
                "postrouting".into(),
                nat,
                Some(NfHook::Postrouting),
                Some(100),
                accept
            ),
            (
                "forward".into(),
                Some(NfChainType::Filter),
                Some(NfHook::Forward),
                Some(0),
                accept
            ),
            ("ports".into(), None, None, None, None),
        ]
    );
}

#[test]
fn ports_are_dnat_rules_and_skip_internal_networks() {
    let doc = ruleset("vmctl", &full_state());
    assert_eq!(
        rules(&doc, "ports"),
        [
            "tcp dport 8080 dnat to 172.18.0.2:80",
            "ip daddr 10.0.0.5 tcp dport 8443 dnat to 172.18.0.3:443",
            "udp dport 5353 dnat to 172.20.0.2:53",
        ]
    );
}

#[test]
fn postrouting_masquerades_outbound_localhost_and_hairpin() {
    let doc = ruleset("vmctl", &full_state());
    assert_eq!(
        rules(&doc, "postrouting"),
        [
            "ip saddr 172.18.0.0/16 oifname != \"br-a\" masquerade",
            "oifname \"br-a\" ip saddr 127.0.0.0/8 masquerade",
            "oifname \"br-a\" ip saddr 172.18.0.0/16 ct status dnat masquerade",
            "oifname \"br-b\" ip saddr 127.0.0.0/8 masquerade",
            "oifname \"br-b\" ip saddr 172.19.0.0/16 ct status dnat masquerade",
            "ip saddr 172.20.0.0/16 oifname != \"br-c\" masquerade",
            "oifname \"br-c\" ip saddr 127.0.0.0/8 masquerade",
            "oifname \"br-c\" ip saddr 172.20.0.0/16 ct status dnat masquerade",
        ]
    );
}

#[test]
fn forward_isolates_internal_and_icc_off_networks() {
    let doc = ruleset("vmctl", &full_state());
    assert_eq!(
        rules(&doc, "forward"),
        [
            "iifname \"br-a\" oifname { \"br-b\", \"br-c\" } drop",
            "iifname \"br-a\" oifname \"br-a\" ip saddr 172.18.0.2 ip daddr 172.18.0.3 tcp dport 5432 accept",
            "iifname \"br-a\" oifname \"br-a\" ip saddr 172.18.0.3 ip daddr 172.18.0.2 tcp sport 5432 accept",
            "iifname \"br-a\" oifname \"br-a\" drop",
            "iifname \"br-b\" oifname != \"br-b\" drop",
            "oifname \"br-b\" iifname != \"br-b\" drop",
            "iifname \"br-c\" oifname { \"br-a\", \"br-b\" } drop",
        ]
    );
}

#[test]
fn a_single_network_has_no_isolation_rule() {
    let mut state = full_state();
    state.networks.retain(|n| n.bridge == "br-c");
    state.ports.retain(|p| p.bridge == "br-c");
    state.links.clear();
    let doc = ruleset("vmctl", &state);
    assert!(rules(&doc, "forward").is_empty());
}

#[test]
fn same_state_in_any_order_renders_the_same() {
    let state = full_state();
    let mut shuffled = state.clone();
    shuffled.networks.reverse();
    shuffled.ports.rotate_left(2);
    shuffled.links.reverse();
    shuffled.ports.push(state.ports[0].clone());
    let mut unspecified = state.ports[0].clone(); // udp 5353 on any address
    unspecified.host_ip = Some(std::net::Ipv4Addr::UNSPECIFIED);
    shuffled.ports.push(unspecified);
    assert_eq!(ruleset("vmctl", &state), ruleset("vmctl", &shuffled));
    let json = |doc: &Nftables| serde_json::to_string(doc).unwrap();
    assert_eq!(json(&ruleset("t", &state)), json(&ruleset("t", &shuffled)));
}

#[test]
fn a_port_on_one_address_goes_before_the_same_port_on_any() {
    let mut state = full_state();
    let mut any = state.ports[1].clone();
    any.host_ip = Some(std::net::Ipv4Addr::UNSPECIFIED); // same as None
    any.container_ip = "172.18.0.9".parse().unwrap();
    state.ports.insert(0, any);
    let doc = ruleset("vmctl", &state);
    let ports = rules(&doc, "ports");
    assert_eq!(
        ports[1],
        "ip daddr 10.0.0.5 tcp dport 8443 dnat to 172.18.0.3:443"
    );
    assert_eq!(ports[2], "tcp dport 8443 dnat to 172.18.0.9:443");
}

#[test]
fn links_of_icc_networks_are_not_rendered() {
    let mut state = full_state();
    for net in &mut state.networks {
        net.icc = true;
    }
    let doc = ruleset("vmctl", &state);
    assert!(rules(&doc, "forward").iter().all(|r| !r.contains("accept")));
    assert_eq!(
        count_rules(&ruleset("vmctl", &full_state())) - count_rules(&doc),
        3
    );
}

#[test]
fn json_matches_what_nft_prints() {
    let mut state = full_state();
    state.ports.retain(|p| p.protocol == Protocol::Udp);
    let doc = serde_json::to_value(ruleset("vmctl", &state)).unwrap();
    let objects = doc["nftables"].as_array().unwrap();
    let find = |needle: &str| {
        objects
            .iter()
            .find(|o| o.to_string().contains(needle))
            .unwrap_or_else(|| panic!("no object with {needle}"))
            .clone()
    };
    let dnat = find("dnat");
    assert_eq!(
        dnat["add"]["rule"]["expr"],
        serde_json::json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 5353}},
            {"dnat": {"addr": "172.20.0.2", "port": 53}},
        ])
    );
    let hairpin = find("status");
    assert_eq!(
        hairpin["add"]["rule"]["expr"][2],
        serde_json::json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}})
    );
    assert_eq!(
        find("fib")["add"]["rule"]["expr"][0],
        serde_json::json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
    );
}

#[test]
fn removal_is_add_then_delete() {
    let doc = serde_json::to_value(removal("vmctl")).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"nftables": [
            {"add": {"table": {"family": "ip", "name": "vmctl"}}},
            {"delete": {"table": {"family": "ip", "name": "vmctl"}}},
        ]})
    );
}

#[test]
fn the_vms_network_is_guarded_but_for_dns_to_its_resolvers() {
    let mut state = full_state();
    state.guarded = vec!["10.0.2.15/24".parse().unwrap()];
    state.resolvers = vec!["10.0.2.3".parse().unwrap()];
    let doc = ruleset("vmctl", &state);
    let forward = rules(&doc, "forward");
    // br-b is internal: no DNS way out of it.
    assert_eq!(
        forward[..3],
        [
            "iifname { \"br-a\", \"br-c\" } ip daddr 10.0.2.3 udp dport 53 accept",
            "iifname { \"br-a\", \"br-c\" } ip daddr 10.0.2.3 tcp dport 53 accept",
            "iifname { \"br-a\", \"br-b\", \"br-c\" } ip daddr 10.0.2.0/24 drop",
        ]
    );
    // Nothing guarded (a standalone engine): no guard rules.
    let plain = rules(&ruleset("vmctl", &full_state()), "forward");
    assert!(plain.iter().all(|r| !r.contains("10.0.2")));
}
