//! Topology and status EVENTs from the primary, as drivers may see them.
//!
//! They name a node's address, which drivers would connect to. In virtual mode the nodes are
//! the proxy instances, which neither join nor leave the cluster: the clusters' topology and
//! status events are dropped (a driver notices a proxy instance that goes away by its closed
//! connections). In ghost mode they are rewritten to the node's ghost address, and dropped for
//! a node the map does not know. Schema changes pass unchanged.

use std::net::{IpAddr, SocketAddr};

use crate::message::Event;
use crate::topology::{GhostMap, TopologyMode};

/// What becomes of an EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFate<'a> {
    /// Relay it as it came.
    Pass,
    /// Relay this instead.
    Rewrite(Event<'a>),
    /// Do not relay it; `unmapped` is the node address a ghost map lacks, if that is why.
    Drop { unmapped: Option<IpAddr> },
}

/// What `mode` does with `event`; `port` is the proxy's own port, for ghosts without one.
pub fn fate<'a>(mode: &TopologyMode, event: &Event<'a>, port: u16) -> EventFate<'a> {
    let Some(address) = event.address() else {
        return EventFate::Pass;
    };
    match mode {
        TopologyMode::Virtual(_) => EventFate::Drop { unmapped: None },
        TopologyMode::Ghost(map) => ghost(map, event, address, port),
    }
}

fn ghost<'a>(map: &GhostMap, event: &Event<'a>, address: SocketAddr, port: u16) -> EventFate<'a> {
    match map.get(address.ip()) {
        Some(ghost) => EventFate::Rewrite(
            event.with_address(SocketAddr::new(ghost.address, ghost.port.unwrap_or(port))),
        ),
        None => EventFate::Drop {
            unmapped: Some(address.ip()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{SchemaChange, SchemaTarget};
    use crate::topology::VirtualTopology;

    #[test]
    fn virtual_drops_ghost_rewrites_schema_passes() {
        let up = Event::StatusChange {
            change: Event::UP,
            address: "10.0.0.2:9042".parse().unwrap(),
        };
        let virt = TopologyMode::Virtual(VirtualTopology::default());
        assert_eq!(fate(&virt, &up, 29042), EventFate::Drop { unmapped: None });
        let mut map = GhostMap::default();
        map.insert(
            "10.0.0.2".parse().unwrap(),
            "10.9.0.2".parse().unwrap(),
            None,
        );
        let ghost = TopologyMode::Ghost(map);
        assert_eq!(
            fate(&ghost, &up, 29042),
            EventFate::Rewrite(up.with_address("10.9.0.2:29042".parse().unwrap()))
        );
        let other = up.with_address("10.0.0.3:9042".parse().unwrap());
        assert_eq!(
            fate(&ghost, &other, 29042),
            EventFate::Drop {
                unmapped: Some("10.0.0.3".parse().unwrap())
            }
        );
        let schema = Event::SchemaChange(SchemaChange {
            change: "CREATED",
            target: SchemaTarget::Keyspace("ks"),
        });
        assert_eq!(fate(&virt, &schema, 29042), EventFate::Pass);
    }
}
