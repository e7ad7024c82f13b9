//! Authentication: the target logs in with the proxy's own credentials
//! (`Config.target.credentials`, `--target-username`), or with the client's when the proxy has
//! none; the source always gets the client's. A target that refuses the login never fails
//! the client: its writes are counted as missed. v4 and v5 (v5 switches to segments after
//! AUTHENTICATE).

#![allow(clippy::unwrap_used)]

mod sim_common;

use cqlmirror_core::config::{Credentials, Secret, Upstream};
use cqlmirror_core::failure::FailureKind;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::session::Event;
use cqlmirror_sim::{ClientSpec, Scenario, Workload};
use sim_common::{expect, run, seeds};

fn creds(user: &str, password: &str) -> Option<(String, String)> {
    Some((user.to_owned(), password.to_owned()))
}

fn proxy_login(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: user.to_owned(),
        password: Secret::new(password),
    })
}

fn scenario(seed: u64, version: ProtocolVersion) -> Scenario {
    let mut s = Scenario::new(seed);
    let mut c = ClientSpec::new(version);
    c.workload = Workload {
        ops: 120,
        ..Workload::default()
    };
    s.clients = vec![c];
    s
}

fn each_case(mut body: impl FnMut(String, Scenario)) {
    for seed in seeds(0..4) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            body(format!("{version}"), scenario(seed, version));
        }
    }
}

#[test]
fn target_logs_in_with_the_proxys_credentials() {
    each_case(|name, mut s| {
        let name = format!("target login, {name}");
        let seed = s.seed;
        s.target.credentials = creds("migrator", "t-secret");
        s.config.target.credentials = proxy_login("migrator", "t-secret");
        if seed % 2 == 1 {
            // The source asks the client too.
            s.source.credentials = creds("app", "s-secret");
            s.clients[0].credentials = creds("app", "s-secret");
        }
        let (_, v) = run(&name, s);
        expect(
            v.summary.unanswered == 0
                && v.summary.missed_reported == 0
                && v.summary.source_writes == v.summary.target_writes,
            &name,
            seed,
            "the target got every write",
            &v,
        );
    });
}

#[test]
fn client_credentials_relayed_to_both() {
    each_case(|name, mut s| {
        let name = format!("relayed login, {name}");
        let seed = s.seed;
        s.source.credentials = creds("app", "same");
        s.target.credentials = creds("app", "same");
        s.clients[0].credentials = creds("app", "same");
        let (_, v) = run(&name, s);
        expect(
            v.summary.missed_reported == 0 && v.summary.source_writes == v.summary.target_writes,
            &name,
            seed,
            "the target got every write",
            &v,
        );
    });
}

#[test]
fn target_refuses_the_login() {
    each_case(|name, mut s| {
        let name = format!("target refuses, {name}");
        let seed = s.seed;
        s.target.credentials = creds("migrator", "right");
        s.config.target.credentials = proxy_login("migrator", "wrong");
        if seed % 2 == 1 {
            // No proxy login: the client's credentials go to the target and fail there.
            s.config.target.credentials = None;
            s.source.credentials = creds("app", "s-secret");
            s.clients[0].credentials = creds("app", "s-secret");
        }
        let (world, v) = run(&name, s);
        let expected = if seed % 2 == 1 {
            "refused the client's credentials"
        } else {
            "refused the login of --target-username migrator"
        };
        let reported = world.slots()[0].host.as_ref().unwrap().events().iter().any(|(_, e)| {
            matches!(e, Event::Failure { upstream: Upstream::Target, kind: FailureKind::Refused, detail, .. }
                if detail.contains(expected))
        });
        expect(
            reported,
            &name,
            seed,
            format!("the failure says it: {expected}"),
            &v,
        );
        let writes = world.slots()[0]
            .client
            .ops()
            .iter()
            .filter(|o| o.kind.proxy_write())
            .count();
        expect(
            v.summary.unanswered == 0 && v.summary.missed_reported == writes as u64,
            &name,
            seed,
            format!("the client works and all {writes} writes are missed"),
            &v,
        );
    });
}

#[test]
fn wrong_client_credentials_fail_the_handshake() {
    each_case(|name, mut s| {
        let name = format!("bad client login, {name}");
        s.source.credentials = creds("app", "right");
        s.clients[0].credentials = creds("app", "wrong");
        s.clients[0].expect_handshake_failure = true;
        let seed = s.seed;
        let (world, v) = run(&name, s);
        let error = world.slots()[0]
            .client
            .handshake_error()
            .unwrap_or_default()
            .to_owned();
        expect(
            error.contains("BAD_CREDENTIALS"),
            &name,
            seed,
            format!("the source's refusal: {error}"),
            &v,
        );
    });
}

/// An embedder gives the proxy its own credentials for the source (the primary): the proxy
/// logs in there itself and the client, which sends none, is ready and served. The target
/// has no authentication.
#[test]
fn primary_logs_in_with_the_proxys_credentials() {
    each_case(|name, mut s| {
        let name = format!("source login, {name}");
        let seed = s.seed;
        s.source.credentials = creds("migrator", "s-secret");
        s.config.source.credentials = proxy_login("migrator", "s-secret");
        if seed % 2 == 1 {
            // The target has its own login too.
            s.target.credentials = creds("other", "t-secret");
            s.config.target.credentials = proxy_login("other", "t-secret");
        }
        let (world, v) = run(&name, s);
        expect(
            world.slots()[0].client.ready_at().is_some()
                && v.summary.unanswered == 0
                && v.summary.missed_reported == 0
                && v.summary.source_writes == v.summary.target_writes
                && v.summary.source_writes > 0,
            &name,
            seed,
            "the client was ready without credentials and both clusters got every write",
            &v,
        );
    });
}
