//! courier::flat beside flatipc and serde + postcard, for a 64 B, a 4 KiB and a 1 MiB value.
//!
//! For each size it measures:
//! - `into_ipc`: moving the value into its page-aligned IPC form and producing the bytes to send
//!   (`Page::as_bytes`, which zeroes padding and the page tail);
//! - `from_slice`: validating received bytes into a typed zero-copy view (signature, length,
//!   alignment, every bool/char/enum tag, string lengths and UTF-8);
//! - flatipc 0.1.2's `into_ipc` and `from_slice` on a value of the same size and shape (flatipc
//!   checks only length and signature, which is why it is unsound on untrusted bytes);
//! - a serde + postcard round trip of the same value (serialise, then deserialise).
//!
//! Run: `cargo bench -p courier --bench flat`.
//!
//! Measured at commit 6d4c00f on a shared 2-core "Intel(R) Xeon(R) Processor" VM (other builds
//! running, so expect ±20 % noise), rustc 1.95.0, criterion medians:
//!
//! | value | courier `into_ipc`+`as_bytes` | flatipc `into_ipc` | courier `from_slice` (validated) | flatipc `from_slice` (unvalidated) | postcard round trip | postcard deserialise |
//! |---|---|---|---|---|---|---|
//! | 64 B    | 280 ns | 218 ns | 13 ns  | 1.4 ns | 152 ns  | 70 ns   |
//! | 4 KiB   | 1.13 µs | 196 ns | 570 ns | 1.3 ns | 7.3 µs  | 7.1 µs  |
//! | 1 MiB   | 861 µs | 522 µs | 208 µs | 1.3 ns | 1.79 ms | 1.46 ms |
//!
//! `into_ipc` includes a heap allocation of the page-aligned value for both libraries; courier's
//! also zeroes interior padding (which flatipc leaks). Validation is linear in the number of
//! checked fields; flatipc's `from_slice` checks only length and signature, which is unsound on
//! untrusted bytes, and courier's `from_slice_unchecked` (the same contract, `unsafe`) costs
//! about 1 ns.
// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use courier::flat::{self, Page};
use courier::Ipc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::{Deserialize, Serialize};

/// One 64-byte record: every kind of field `from_slice` must check.
#[derive(Ipc, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Rec {
    id: u64,
    letter: char,
    flag: bool,
    kind: Kind,
    name: flat::String<42>,
}

/// An enum with fields.
#[derive(Ipc, Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Kind {
    Idle,
    Busy(u16),
}

const _: () = assert!(core::mem::size_of::<Rec>() == 64);

#[derive(Ipc, Clone, Copy)]
#[repr(C)]
struct Small(Rec);

#[derive(Ipc, Clone, Copy)]
#[repr(C)]
struct Page4K([Rec; 64]);

#[derive(Ipc, Clone, Copy)]
#[repr(C)]
struct Big([Rec; 16384]);

/// The same record for serde + postcard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct RecSerde {
    id: u64,
    letter: char,
    flag: bool,
    kind: KindSerde,
    name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum KindSerde {
    Idle,
    Busy(u16),
}

/// The same layout for flatipc (whose bounded String cannot be built from a shorter `&str`).
#[derive(flatipc::IpcSafe, Clone, Copy)]
#[repr(C)]
struct FRec {
    id: u64,
    letter: char,
    flag: bool,
    kind: FKind,
    name_len: u8,
    name: [u8; 41],
}

#[derive(flatipc::IpcSafe, Clone, Copy)]
#[repr(u8)]
#[allow(dead_code)] // read only as bytes
enum FKind {
    Idle,
    Busy(u16),
}

#[derive(flatipc::Ipc, Clone, Copy)]
#[repr(C)]
struct FSmall(FRec);

#[derive(flatipc::Ipc, Clone, Copy)]
#[repr(C)]
struct FPage4K([FRec; 64]);

#[derive(flatipc::Ipc, Clone, Copy)]
#[repr(C)]
struct FBig([FRec; 16384]);

fn rec(i: usize) -> Rec {
    let mut name = flat::String::new();
    let _ = core::fmt::Write::write_fmt(&mut name, format_args!("record number {i}, ok"));
    Rec {
        id: i as u64,
        letter: 'é',
        flag: i % 2 == 0,
        kind: if i % 3 == 0 {
            Kind::Idle
        } else {
            Kind::Busy(i as u16)
        },
        name,
    }
}

fn rec_serde(r: &Rec) -> RecSerde {
    RecSerde {
        id: r.id,
        letter: r.letter,
        flag: r.flag,
        kind: match r.kind {
            Kind::Idle => KindSerde::Idle,
            Kind::Busy(n) => KindSerde::Busy(n),
        },
        name: r.name.as_str().to_owned(),
    }
}

fn frec(r: &Rec) -> FRec {
    let mut name = [0u8; 41];
    let n = r.name.len().min(41);
    name[..n].copy_from_slice(&r.name.as_bytes()[..n]);
    FRec {
        id: r.id,
        letter: r.letter,
        flag: r.flag,
        kind: match r.kind {
            Kind::Idle => FKind::Idle,
            Kind::Busy(n) => FKind::Busy(n),
        },
        name_len: n as u8,
        name,
    }
}

/// Page-aligned heap storage for received bytes.
fn aligned_copy(bytes: &[u8]) -> Vec<Page<[u8; 4096]>> {
    let mut pages: Vec<Page<[u8; 4096]>> = (0..bytes.len().div_ceil(4096))
        .map(|_| Page::new([0u8; 4096]))
        .collect();
    for (page, chunk) in pages.iter_mut().zip(bytes.chunks(4096)) {
        page[..chunk.len()].copy_from_slice(chunk);
    }
    pages
}

fn as_bytes(pages: &[Page<[u8; 4096]>]) -> &[u8] {
    // SAFETY: `Page<[u8; 4096]>` is exactly 4096 initialised bytes, contiguous in the slice.
    unsafe { core::slice::from_raw_parts(pages.as_ptr().cast::<u8>(), pages.len() * 4096) }
}

fn flatipc_bytes<T>(value: &T) -> &[u8] {
    // SAFETY: only used on flatipc IPC values built from fully initialised records whose interior
    // padding came from `Clone` copies of zero-initialised data; read as bytes for the benchmark.
    unsafe {
        core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>())
    }
}

macro_rules! size_group {
    ($c:expr, $label:expr, $n:expr, $Courier:ident, $IpcCourier:ident, $wrap:expr, $FType:ident, $FIpc:ident, $fwrap:expr) => {{
        let recs: Vec<Rec> = (0..$n).map(rec).collect();
        let serde_value: Vec<RecSerde> = recs.iter().map(rec_serde).collect();
        let value: Box<$Courier> = Box::new($wrap(&recs));
        let fvalue: Box<$FType> = Box::new($fwrap(&recs));
        let bytes_len = core::mem::size_of::<$Courier>();

        let mut g = $c.benchmark_group(format!("flat/{}", $label));
        g.throughput(Throughput::Bytes(bytes_len as u64));

        g.bench_function("courier into_ipc+as_bytes", |b| {
            b.iter_batched(
                || value.clone(),
                |v| {
                    let mut ipc = Box::new((*v).into_ipc());
                    black_box(ipc.as_bytes());
                },
                BatchSize::LargeInput,
            )
        });

        let mut ipc = Box::new((*value).into_ipc());
        let sig = ipc.signature();
        let received = aligned_copy(ipc.as_bytes());
        assert!($IpcCourier::from_slice(as_bytes(&received), sig).is_ok());
        g.bench_function("courier from_slice (validated)", |b| {
            b.iter(|| {
                black_box($IpcCourier::from_slice(black_box(as_bytes(&received)), sig).is_ok())
            })
        });
        g.bench_function("courier from_slice_unchecked", |b| {
            b.iter(|| {
                let bytes = black_box(as_bytes(&received));
                // SAFETY: `received` was validated by `from_slice` above.
                let view = unsafe { $IpcCourier::from_slice_unchecked(bytes) };
                black_box(view.signature())
            })
        });

        {
            use flatipc::{IntoIpc, Ipc as _};
            g.bench_function("flatipc into_ipc", |b| {
                b.iter_batched(
                    || fvalue.clone(),
                    |v| {
                        let ipc = Box::new((*v).into_ipc());
                        black_box(flatipc_bytes(&*ipc));
                    },
                    BatchSize::LargeInput,
                )
            });
            let fipc = Box::new((*fvalue).into_ipc());
            let fsig = fipc.signature();
            let freceived = aligned_copy(flatipc_bytes(&*fipc));
            assert!($FIpc::from_slice(as_bytes(&freceived), fsig).is_some());
            g.bench_function("flatipc from_slice (unchecked contents)", |b| {
                b.iter(|| {
                    black_box($FIpc::from_slice(black_box(as_bytes(&freceived)), fsig).is_some())
                })
            });
        }

        g.bench_function("serde+postcard round trip", |b| {
            b.iter(|| {
                let bytes = postcard::to_allocvec(black_box(&serde_value)).unwrap();
                let back: Vec<RecSerde> = postcard::from_bytes(&bytes).unwrap();
                black_box(back.len())
            })
        });
        let encoded = postcard::to_allocvec(&serde_value).unwrap();
        g.bench_function("serde+postcard deserialise only", |b| {
            b.iter(|| {
                let back: Vec<RecSerde> = postcard::from_bytes(black_box(&encoded)).unwrap();
                black_box(back.len())
            })
        });
        g.finish();
    }};
}

fn benches(c: &mut Criterion) {
    size_group!(
        c,
        "64B",
        1,
        Small,
        IpcSmall,
        |r: &[Rec]| Small(r[0]),
        FSmall,
        IpcFSmall,
        |r: &[Rec]| FSmall(frec(&r[0]))
    );
    size_group!(
        c,
        "4KiB",
        64,
        Page4K,
        IpcPage4K,
        |r: &[Rec]| Page4K(core::array::from_fn(|i| r[i])),
        FPage4K,
        IpcFPage4K,
        |r: &[Rec]| FPage4K(core::array::from_fn(|i| frec(&r[i])))
    );
    size_group!(
        c,
        "1MiB",
        16384,
        Big,
        IpcBig,
        |r: &[Rec]| {
            let mut b = Box::new(Big([r[0]; 16384]));
            b.0.copy_from_slice(r);
            *b
        },
        FBig,
        IpcFBig,
        |r: &[Rec]| {
            let mut b = Box::new(FBig([frec(&r[0]); 16384]));
            for (d, s) in b.0.iter_mut().zip(r) {
                *d = frec(s);
            }
            *b
        }
    );
}

criterion_group! {
    name = flat;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = benches
}
criterion_main!(flat);
