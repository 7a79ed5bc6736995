// A downstream crate that depends on `courier` only (no zerocopy, no courier-core): the derive's
// generated code must resolve everything through `::courier`.
use courier::flat;
use courier::Ipc;

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
pub struct Header {
    id: u32,
    urgent: bool,
    name: flat::String<16>,
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(u8)]
pub enum Body {
    Empty,
    Numbers(flat::Vec<i32, 4>),
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
pub struct Envelope<T> {
    header: Header,
    body: T,
}

#[repr(C, align(4096))]
struct Aligned([u8; 4096]);

fn main() {
    let value = Envelope {
        header: Header { id: 7, urgent: true, name: flat::String::try_from("hi").unwrap() },
        body: Body::Numbers(flat::Vec::try_from(&[1, 2, 3][..]).unwrap()),
    };
    let mut ipc: IpcEnvelope<Body> = value.into_ipc();
    let sig = ipc.signature();
    let mut buf = Aligned([0; 4096]);
    buf.0.copy_from_slice(ipc.as_bytes());
    let got = IpcEnvelope::<Body>::from_slice(&buf.0, sig).unwrap();
    assert_eq!(**got, value);
    assert_eq!(Envelope::from_ipc(ipc), value);
}
