//! Turns a [`FirewallState`] into one nftables JSON transaction. Pure: no
//! I/O, and the same state (in any order) always gives the same document.
//!
//! The transaction is `add table; delete table; add table; add chain…;
//! add rule…`: the first two make the replace work whether or not the table
//! existed, and `nft` commits the whole batch or none of it.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, SetItem, CT,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{FirewallState, LinkRule, NetworkRules, PortRule};

/// The regular chain both DNAT entry points jump to.
const PORTS: &str = "ports";

/// Sources that reach a published port through `127.0.0.1`.
const LOOPBACK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);

/// The base chains: name, type, hook, priority. Every policy is accept.
const BASE_CHAINS: [(&str, NfChainType, NfHook, i32); 4] = [
    ("prerouting", NfChainType::NAT, NfHook::Prerouting, -100), // dstnat
    ("output", NfChainType::NAT, NfHook::Output, -100),
    ("postrouting", NfChainType::NAT, NfHook::Postrouting, 100), // srcnat
    ("forward", NfChainType::Filter, NfHook::Forward, 0),        // filter
];

/// The whole replace transaction for `table`.
pub(super) fn ruleset(table: &str, state: &FirewallState) -> Nftables<'static> {
    let state = Sorted::new(state);
    let mut batch = Batch::new(table);
    batch.command(NfCmd::Add(batch.table()));
    batch.command(NfCmd::Delete(batch.table()));
    batch.command(NfCmd::Add(batch.table()));
    batch.chains();
    for chain in ["prerouting", "output"] {
        batch.rule(chain, vec![local_daddr(), jump(PORTS)]);
    }
    ports(&mut batch, &state);
    postrouting(&mut batch, &state);
    forward(&mut batch, &state);
    batch.finish()
}

/// `add table; delete table`: removes `table` whether or not it exists.
pub(super) fn removal(table: &str) -> Nftables<'static> {
    let mut batch = Batch::new(table);
    batch.command(NfCmd::Add(batch.table()));
    batch.command(NfCmd::Delete(batch.table()));
    batch.finish()
}

/// The state in rendering order, with exact duplicates dropped.
struct Sorted<'a> {
    networks: Vec<&'a NetworkRules>,
    ports: Vec<&'a PortRule>,
    links: Vec<&'a LinkRule>,
    guarded: BTreeSet<Ipv4Net>,
    resolvers: BTreeSet<Ipv4Addr>,
}

impl<'a> Sorted<'a> {
    fn new(state: &'a FirewallState) -> Sorted<'a> {
        let mut networks: Vec<_> = state.networks.iter().collect();
        networks.sort_by_key(|n| (&n.bridge, n.subnet, n.internal, n.masquerade, n.icc));
        networks.dedup();
        let mut ports: Vec<_> = state.ports.iter().collect();
        ports.sort_by_key(|p| p.key());
        ports.dedup_by_key(|p| p.key());
        let mut links: Vec<_> = state.links.iter().collect();
        links.sort_by_key(|l| (&l.bridge, l.from, l.to, l.protocol, l.port));
        links.dedup();
        Sorted {
            networks,
            ports,
            links,
            guarded: state.guarded.iter().map(|n| n.trunc()).collect(),
            resolvers: state.resolvers.iter().copied().collect(),
        }
    }
}

/// `ports`: one DNAT rule per published port, except on internal networks.
fn ports(batch: &mut Batch, state: &Sorted) {
    let internal: HashSet<&str> = state
        .networks
        .iter()
        .filter(|n| n.internal)
        .map(|n| n.bridge.as_str())
        .collect();
    for port in state
        .ports
        .iter()
        .filter(|p| !internal.contains(&*p.bridge))
    {
        let mut expr = Vec::with_capacity(3);
        if let Some(host_ip) = port.host_ip() {
            expr.push(eq(field("ip", "daddr"), text(host_ip)));
        }
        expr.push(eq(
            field(port.protocol.as_str(), "dport"),
            Expression::Number(port.host_port.into()),
        ));
        expr.push(Statement::DNAT(Some(NAT {
            addr: Some(text(port.container_ip)),
            family: None,
            port: Some(Expression::Number(port.container_port.into())),
            flags: None,
        })));
        batch.rule(PORTS, expr);
    }
}

/// `postrouting`: outbound masquerade, localhost and hairpin source NAT.
fn postrouting(batch: &mut Batch, state: &Sorted) {
    for net in &state.networks {
        let subnet = net.subnet.trunc();
        if net.masquerade && !net.internal {
            let oif = ne(meta(MetaKey::Oifname), text(&net.bridge));
            batch.rule(
                "postrouting",
                vec![eq(field("ip", "saddr"), prefix(subnet)), oif, masquerade()],
            );
        }
        let from_loopback = eq(field("ip", "saddr"), prefix(LOOPBACK));
        batch.rule(
            "postrouting",
            vec![oifname(&net.bridge), from_loopback, masquerade()],
        );
        let from_subnet = eq(field("ip", "saddr"), prefix(subnet));
        batch.rule(
            "postrouting",
            vec![oifname(&net.bridge), from_subnet, dnatted(), masquerade()],
        );
    }
}

/// `forward`: first the guard of the VM's own network (containers reach it
/// only for DNS to the engine's upstreams, and never from an internal
/// network), then per network the internal drops, isolation from our other
/// bridges, and for `icc == false` the link accepts before the drop.
fn forward(batch: &mut Batch, state: &Sorted) {
    let bridges: BTreeSet<&str> = state.networks.iter().map(|n| n.bridge.as_str()).collect();
    guard(batch, state, &bridges);
    for net in &state.networks {
        let br = net.bridge.as_str();
        // An internal bridge drops everything crossing it, which covers
        // isolation; the others drop only what goes to our other bridges.
        if net.internal {
            let out = vec![iifname(br), ne(meta(MetaKey::Oifname), text(br)), drop()];
            let into = vec![oifname(br), ne(meta(MetaKey::Iifname), text(br)), drop()];
            batch.rule("forward", out);
            batch.rule("forward", into);
        } else {
            let others: Vec<SetItem> = bridges
                .iter()
                .filter(|other| **other != br)
                .map(|other| SetItem::Element(text(other)))
                .collect();
            if !others.is_empty() {
                let set = Expression::Named(NamedExpression::Set(others));
                batch.rule("forward", vec![iifname(br), oifname_in(set), drop()]);
            }
        }
        if net.icc {
            continue;
        }
        for link in state.links.iter().filter(|l| l.bridge == br) {
            let proto = link.protocol.as_str();
            let port = Expression::Number(link.port.into());
            let request = vec![
                iifname(br),
                oifname(br),
                eq(field("ip", "saddr"), text(link.from)),
                eq(field("ip", "daddr"), text(link.to)),
                eq(field(proto, "dport"), port.clone()),
                accept(),
            ];
            let reply = vec![
                iifname(br),
                oifname(br),
                eq(field("ip", "saddr"), text(link.to)),
                eq(field("ip", "daddr"), text(link.from)),
                eq(field(proto, "sport"), port),
                accept(),
            ];
            batch.rule("forward", request);
            batch.rule("forward", reply);
        }
        batch.rule("forward", vec![iifname(br), oifname(br), drop()]);
    }
}

/// The guard of [`FirewallState::guarded`]: DNS to the resolvers accepted
/// from non-internal bridges, everything else from any bridge dropped.
fn guard(batch: &mut Batch, state: &Sorted, bridges: &BTreeSet<&str>) {
    if state.guarded.is_empty() || bridges.is_empty() {
        return;
    }
    let set = |names: Vec<&str>| {
        let items = names
            .into_iter()
            .map(|name| SetItem::Element(text(name)))
            .collect();
        Expression::Named(NamedExpression::Set(items))
    };
    let open: Vec<&str> = state
        .networks
        .iter()
        .filter(|n| !n.internal)
        .map(|n| n.bridge.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !open.is_empty() {
        for resolver in &state.resolvers {
            for proto in ["udp", "tcp"] {
                batch.rule(
                    "forward",
                    vec![
                        iifname_in(set(open.clone())),
                        eq(field("ip", "daddr"), text(resolver)),
                        eq(field(proto, "dport"), Expression::Number(53)),
                        accept(),
                    ],
                );
            }
        }
    }
    for net in &state.guarded {
        batch.rule(
            "forward",
            vec![
                iifname_in(set(bridges.iter().copied().collect())),
                eq(field("ip", "daddr"), prefix(*net)),
                drop(),
            ],
        );
    }
}

/// Collects the commands of one transaction on one `ip` table.
struct Batch {
    table: String,
    objects: Vec<NfObject<'static>>,
}

impl Batch {
    fn new(table: &str) -> Batch {
        Batch {
            table: table.to_owned(),
            objects: Vec::new(),
        }
    }

    fn table(&self) -> NfListObject<'static> {
        NfListObject::Table(Table {
            family: NfFamily::IP,
            name: Cow::Owned(self.table.clone()),
            handle: None,
        })
    }

    fn command(&mut self, command: NfCmd<'static>) {
        self.objects.push(NfObject::CmdObject(command));
    }

    /// Adds the base chains (in [`BASE_CHAINS`] order) and `ports`.
    fn chains(&mut self) {
        for (name, kind, hook, prio) in BASE_CHAINS {
            let chain = Chain {
                _type: Some(kind),
                hook: Some(hook),
                prio: Some(prio),
                policy: Some(NfChainPolicy::Accept),
                ..self.chain(name)
            };
            self.command(NfCmd::Add(NfListObject::Chain(chain)));
        }
        let ports = self.chain(PORTS);
        self.command(NfCmd::Add(NfListObject::Chain(ports)));
    }

    fn chain(&self, name: &str) -> Chain<'static> {
        Chain {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_owned()),
            ..Chain::default()
        }
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        let rule = Rule {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            chain: Cow::Owned(chain.to_owned()),
            expr: Cow::Owned(expr),
            ..Rule::default()
        };
        self.command(NfCmd::Add(NfListObject::Rule(rule)));
    }

    fn finish(self) -> Nftables<'static> {
        Nftables {
            objects: Cow::Owned(self.objects),
        }
    }
}

fn text(value: impl ToString) -> Expression<'static> {
    Expression::String(Cow::Owned(value.to_string()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn field(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(text(net.network())),
        len: net.prefix_len().into(),
    }))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn ne(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

fn iifname(bridge: &str) -> Statement<'static> {
    eq(meta(MetaKey::Iifname), text(bridge))
}

fn oifname(bridge: &str) -> Statement<'static> {
    eq(meta(MetaKey::Oifname), text(bridge))
}

fn iifname_in(set: Expression<'static>) -> Statement<'static> {
    eq(meta(MetaKey::Iifname), set)
}

fn oifname_in(set: Expression<'static>) -> Statement<'static> {
    eq(meta(MetaKey::Oifname), set)
}

/// `fib daddr type local`: the packet is addressed to this host.
fn local_daddr() -> Statement<'static> {
    let fib = Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr]),
    };
    eq(Expression::Named(NamedExpression::Fib(fib)), text("local"))
}

/// `ct status dnat`: the connection's destination was rewritten.
fn dnatted() -> Statement<'static> {
    let status = CT {
        key: "status".into(),
        family: None,
        dir: None,
    };
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(status)),
        right: text("dnat"),
        op: Operator::IN,
    })
}

fn jump(chain: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(chain.to_owned()),
    })
}

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
