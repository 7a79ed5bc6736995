//! Property tests for `courier::flat`. Cases:
//! - value -> IPC form -> bytes -> `from_slice` -> value is the identity, for several derived
//!   types (nested structs, enums with fields, bounded strings and vectors, options, generics);
//! - the exposed bytes never depend on what was in padding before (two values built differently
//!   give identical bytes);
//! - random byte strings (and random corruptions of valid values) given to `from_slice` and
//!   `with_slice_mut` never panic, and whatever they accept reads back without panicking.

use courier::flat::{self, IpcSafe, Page};
use courier::Ipc;
use proptest::prelude::*;

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct Point {
    x: i16,
    flag: bool,
    y: u64,
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(u8)]
enum Event {
    Nothing,
    Key { code: u32, down: bool } = 10,
    Text(flat::String<7>),
    At(Point),
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct Pair<A, B> {
    a: A,
    b: B,
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct Record {
    id: u32,
    letter: char,
    name: flat::String<12>,
    events: flat::Vec<Event, 3>,
    last: flat::Option<Event>,
    pair: Pair<u8, [bool; 3]>,
}

fn point() -> impl Strategy<Value = Point> {
    (any::<i16>(), any::<bool>(), any::<u64>()).prop_map(|(x, flag, y)| Point { x, flag, y })
}

fn bounded<const N: usize>() -> impl Strategy<Value = flat::String<N>> {
    ".{0,8}".prop_map(|s| {
        let mut out = flat::String::new();
        for c in s.chars() {
            if out.push(c).is_err() {
                break;
            }
        }
        out
    })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Nothing),
        (any::<u32>(), any::<bool>()).prop_map(|(code, down)| Event::Key { code, down }),
        bounded::<7>().prop_map(Event::Text),
        point().prop_map(Event::At),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u32>(),
        any::<char>(),
        bounded::<12>(),
        proptest::collection::vec(event(), 0..=3),
        proptest::option::of(event()),
        (any::<u8>(), any::<[bool; 3]>()),
    )
        .prop_map(|(id, letter, name, events, last, (a, b))| Record {
            id,
            letter,
            name,
            events: flat::Vec::try_from(&events[..]).unwrap(),
            last: last.into(),
            pair: Pair { a, b },
        })
}

fn round_trip<T: IpcSafe + Clone + PartialEq + core::fmt::Debug>(value: T) {
    let mut ipc = Page::new(value.clone());
    let sig = ipc.signature();
    let bytes = ipc.as_bytes().to_vec();
    let buf = Aligned::from(&bytes);
    let got = Page::<T>::from_slice(buf.bytes(), sig).unwrap();
    assert_eq!(**got, value);
}

/// A page-aligned heap buffer.
struct Aligned {
    pages: Vec<Page<[u8; 4096]>>,
    len: usize,
}

impl Aligned {
    fn from(bytes: &[u8]) -> Self {
        let n = bytes.len().div_ceil(4096).max(1);
        let mut pages: Vec<Page<[u8; 4096]>> = (0..n).map(|_| Page::new([0u8; 4096])).collect();
        for (i, chunk) in bytes.chunks(4096).enumerate() {
            pages[i][..chunk.len()].copy_from_slice(chunk);
        }
        Self {
            pages,
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `Page<[u8; 4096]>` is exactly 4096 initialised bytes (size = the array's, no
        // tail), so the vector's buffer is `pages.len() * 4096` contiguous initialised bytes.
        let all = unsafe {
            core::slice::from_raw_parts(self.pages.as_ptr().cast::<u8>(), self.pages.len() * 4096)
        };
        &all[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        // SAFETY: as in `bytes`, borrowed mutably.
        let all = unsafe {
            core::slice::from_raw_parts_mut(
                self.pages.as_mut_ptr().cast::<u8>(),
                self.pages.len() * 4096,
            )
        };
        &mut all[..len]
    }
}

proptest! {
    #[test]
    fn round_trips(r in record(), p in point(), e in event()) {
        round_trip(r);
        round_trip(p);
        round_trip(e);
        round_trip(Pair { a: e, b: flat::Option::Some(p) });
        round_trip([e, e]);
    }

    #[test]
    fn bytes_do_not_depend_on_history(r in record(), other in record()) {
        // Build the same value twice, once by overwriting a different value in place.
        let mut a = r.into_ipc();
        let mut b = other.into_ipc();
        *b = r;
        prop_assert_eq!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000), right_sig in any::<bool>()) {
        let buf = Aligned::from(&bytes);
        let sig = if right_sig { Record::signature() } else { 0 };
        if let Ok(r) = IpcRecord::from_slice(buf.bytes(), sig) {
            let _ = format!("{:?}", **r);
            let _ = r.name.as_str();
            let _ = r.events.iter().count();
        }
        let _ = IpcEvent::from_slice(buf.bytes(), Event::signature());
        let _ = Page::<flat::Vec<Point, 100>>::from_slice(buf.bytes(), <flat::Vec<Point, 100> as IpcSafe>::SIGNATURE);
    }

    #[test]
    fn corrupted_values_never_panic(r in record(), flips in proptest::collection::vec((0usize..256, any::<u8>()), 1..8)) {
        let mut ipc = r.into_ipc();
        let mut buf = Aligned::from(ipc.as_bytes());
        let size = core::mem::size_of::<Record>();
        for (at, byte) in flips {
            buf.bytes_mut()[at % size] = byte;
        }
        if let Ok(got) = IpcRecord::from_slice(buf.bytes(), Record::signature()) {
            let _ = format!("{:?}", **got);
        }
        let _ = IpcRecord::with_slice_mut(buf.bytes_mut(), Record::signature(), |rec| {
            rec.id = rec.id.wrapping_add(1);
            let _ = rec.name.push('x');
        });
        // Whatever happened, the bytes are initialised and still parse the same way twice.
        let once = IpcRecord::from_slice(buf.bytes(), Record::signature()).map(|r| **r);
        let twice = IpcRecord::from_slice(buf.bytes(), Record::signature()).map(|r| **r);
        prop_assert_eq!(once, twice);
    }
}
