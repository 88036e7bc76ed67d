//! Lookups with borrowed strings in the engine's maps keyed by tuples of owned strings.
//!
//! A `BTreeMap<(String, String), V>` can only be searched with a `(String, String)`, so
//! every lookup would allocate its strings, although the key is nearly always there
//! already (a fill touches one position, three balances and a day's P&L). Each key type
//! below can also be borrowed as a `dyn` view that compares and hashes like the tuple, so
//! `&("acct", "USDT") as &dyn Pair` finds the entry of `("acct".into(), "USDT".into())`;
//! the owned key is built only when an entry is added.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

/// `(account, asset)`: a balance.
pub(crate) trait Pair {
    fn parts(&self) -> (&str, &str);
}

impl Pair for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl Pair for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        *self
    }
}

impl<'a> Borrow<dyn Pair + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn Pair + 'a) {
        self
    }
}

/// `(account, venue, symbol)`: a position.
pub(super) trait Triple {
    fn parts(&self) -> (&str, &str, &str);
}

impl Triple for (String, String, String) {
    fn parts(&self) -> (&str, &str, &str) {
        (&self.0, &self.1, &self.2)
    }
}

impl Triple for (&str, &str, &str) {
    fn parts(&self) -> (&str, &str, &str) {
        *self
    }
}

impl<'a> Borrow<dyn Triple + 'a> for (String, String, String) {
    fn borrow(&self) -> &(dyn Triple + 'a) {
        self
    }
}

/// `(account, day)`: a day's realized P&L.
pub(super) trait AccountDay {
    fn parts(&self) -> (&str, u64);
}

impl AccountDay for (String, u64) {
    fn parts(&self) -> (&str, u64) {
        (&self.0, self.1)
    }
}

impl AccountDay for (&str, u64) {
    fn parts(&self) -> (&str, u64) {
        *self
    }
}

impl<'a> Borrow<dyn AccountDay + 'a> for (String, u64) {
    fn borrow(&self) -> &(dyn AccountDay + 'a) {
        self
    }
}

/// Equality, order and hash of each view are those of its parts as a tuple, which are
/// those of the owned tuple (`String` compares and hashes as its `str`): what `Borrow`
/// requires.
macro_rules! like_the_tuple {
    ($view:ident) => {
        impl PartialEq for dyn $view + '_ {
            fn eq(&self, other: &Self) -> bool {
                self.parts() == other.parts()
            }
        }
        impl Eq for dyn $view + '_ {}
        impl PartialOrd for dyn $view + '_ {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for dyn $view + '_ {
            fn cmp(&self, other: &Self) -> Ordering {
                self.parts().cmp(&other.parts())
            }
        }
        impl Hash for dyn $view + '_ {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.parts().hash(state);
            }
        }
    };
}

like_the_tuple!(Pair);
like_the_tuple!(Triple);
like_the_tuple!(AccountDay);

/// Changes the entry found by `key`, adding `owned()` with the default value first when
/// there is none.
pub(super) fn update_sorted<K, Q, V>(
    map: &mut BTreeMap<K, V>,
    key: &Q,
    owned: impl FnOnce() -> K,
    change: impl FnOnce(&mut V),
) where
    K: Borrow<Q> + Ord,
    Q: Ord + ?Sized,
    V: Default,
{
    match map.get_mut(key) {
        Some(value) => change(value),
        None => change(map.entry(owned()).or_default()),
    }
}

/// [`update_sorted`] for a hash map.
pub(crate) fn update_hashed<K, Q, V, S>(
    map: &mut HashMap<K, V, S>,
    key: &Q,
    owned: impl FnOnce() -> K,
    change: impl FnOnce(&mut V),
) where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
    S: BuildHasher,
    V: Default,
{
    match map.get_mut(key) {
        Some(value) => change(value),
        None => change(map.entry(owned()).or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_views_find_the_owned_keys_and_keep_their_order() {
        let mut balances: BTreeMap<(String, String), i32> = BTreeMap::new();
        for (account, asset) in [("b", "USDT"), ("a", "USDT"), ("a", "BTC"), ("ab", "")] {
            update_sorted(
                &mut balances,
                &(account, asset) as &dyn Pair,
                || (account.to_owned(), asset.to_owned()),
                |v| *v += 1,
            );
        }
        update_sorted(
            &mut balances,
            &("a", "BTC") as &dyn Pair,
            || unreachable!("the key is there"),
            |v| *v += 10,
        );
        assert_eq!(
            balances.get(&("a", "BTC") as &dyn Pair),
            Some(&11),
            "found without building the key"
        );
        assert_eq!(balances.get(&("a", "ETH") as &dyn Pair), None);
        let in_order: Vec<_> = balances
            .range::<dyn Pair, _>((
                std::ops::Bound::Included(&("a", "") as &dyn Pair),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|((a, _), _)| a == "a")
            .map(|((_, asset), v)| (asset.as_str(), *v))
            .collect();
        assert_eq!(in_order, [("BTC", 11), ("USDT", 1)], "the tuple's order");

        let mut positions: BTreeMap<(String, String, String), i32> = BTreeMap::new();
        positions.insert(("a".into(), "paper".into(), "BTC-USDT".into()), 3);
        assert_eq!(
            positions.get(&("a", "paper", "BTC-USDT") as &dyn Triple),
            Some(&3)
        );
        assert_eq!(positions.get(&("a", "paper", "BTC") as &dyn Triple), None);

        let mut pnl: HashMap<(String, u64), i32, foldhash::fast::RandomState> = HashMap::default();
        pnl.insert(("a".into(), 20_000_u64), 5);
        update_hashed(
            &mut pnl,
            &("a", 20_000_u64) as &dyn AccountDay,
            || unreachable!("the key is there"),
            |v| *v -= 1,
        );
        update_hashed(
            &mut pnl,
            &("a", 20_001_u64) as &dyn AccountDay,
            || ("a".into(), 20_001_u64),
            |v| *v -= 2,
        );
        assert_eq!(pnl.get(&("a".to_owned(), 20_000)), Some(&4), "same hash");
        assert_eq!(pnl.get(&("a", 20_001_u64) as &dyn AccountDay), Some(&-2));
        assert_eq!(pnl.len(), 2);
    }
}
