//! The shard's group table: for each hub, group name → the local sessions in it.
//!
//! Only sessions on this shard are listed (shared nothing); a send to a group reaches the other
//! shards' members through the backplane. Each session remembers its own groups, so leaving all
//! of them when it ends costs O(its groups), never a scan of the table. Group names compare
//! exactly (ASP.NET compares a connection's own group set ignoring case but routes by the exact
//! name, so exact matching is what crosses servers consistently).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::sessions::SessionKey;

/// Group memberships of the shard's sessions.
#[derive(Debug, Default)]
pub struct GroupTable {
    /// hub name → group name → members.
    hubs: RefCell<HashMap<String, HashMap<String, HashSet<SessionKey>>>>,
}

impl GroupTable {
    /// Adds `member` to `group`; returns whether it is the group's first local member.
    pub fn join(&self, hub: &str, group: &str, member: SessionKey) -> bool {
        let mut hubs = self.hubs.borrow_mut();
        let groups = hubs.entry(hub.to_owned()).or_default();
        let members = groups.entry(group.to_owned()).or_default();
        let first = members.is_empty();
        members.insert(member);
        first
    }

    /// Removes `member` from `group`; returns whether the group has no local member left.
    pub fn leave(&self, hub: &str, group: &str, member: SessionKey) -> bool {
        let mut hubs = self.hubs.borrow_mut();
        let Some(groups) = hubs.get_mut(hub) else {
            return false;
        };
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        members.remove(&member);
        if members.is_empty() {
            groups.remove(group);
            return true;
        }
        false
    }

    /// The local members of `group` (a snapshot: delivering may change the table).
    pub fn members(&self, hub: &str, group: &str) -> Vec<SessionKey> {
        self.hubs
            .borrow()
            .get(hub)
            .and_then(|groups| groups.get(group))
            .map(|members| members.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `group` has a local member.
    pub fn has_members(&self, hub: &str, group: &str) -> bool {
        self.hubs
            .borrow()
            .get(hub)
            .and_then(|groups| groups.get(group))
            .is_some_and(|members| !members.is_empty())
    }

    /// How many groups of `hub` have local members.
    pub fn group_count(&self, hub: &str) -> usize {
        self.hubs.borrow().get(hub).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: u32) -> SessionKey {
        SessionKey {
            slot,
            serial: u64::from(slot),
        }
    }

    #[test]
    fn joins_and_leaves_report_the_first_and_last_local_member() {
        let table = GroupTable::default();
        assert!(table.join("chat", "g", key(1)));
        assert!(!table.join("chat", "g", key(2)));
        assert!(!table.join("chat", "g", key(2)));
        let mut members = table.members("chat", "g");
        members.sort_by_key(|k| k.slot);
        assert_eq!(members, vec![key(1), key(2)]);
        assert!(!table.leave("chat", "g", key(1)));
        assert!(table.leave("chat", "g", key(2)));
        assert!(table.members("chat", "g").is_empty());
        assert!(!table.has_members("chat", "g"));
        assert_eq!(table.group_count("chat"), 0);
    }

    #[test]
    fn hubs_and_groups_are_separate_and_names_exact() {
        let table = GroupTable::default();
        table.join("a", "g", key(1));
        table.join("b", "g", key(2));
        table.join("a", "G", key(3));
        assert_eq!(table.members("a", "g"), vec![key(1)]);
        assert_eq!(table.members("b", "g"), vec![key(2)]);
        assert_eq!(table.members("a", "G"), vec![key(3)]);
        assert!(table.has_members("b", "g") && !table.has_members("b", "G"));
        assert!(!table.leave("a", "missing", key(1)));
    }

    #[test]
    fn ten_thousand_groups_join_and_leave_cleanly() {
        let table = GroupTable::default();
        for i in 0..10_000u32 {
            table.join("h", &format!("task-{i}"), key(i % 100));
        }
        assert_eq!(table.group_count("h"), 10_000);
        for i in 0..10_000u32 {
            table.leave("h", &format!("task-{i}"), key(i % 100));
        }
        assert_eq!(table.group_count("h"), 0);
    }
}
