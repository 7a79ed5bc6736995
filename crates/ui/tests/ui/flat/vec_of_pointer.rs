// flatipc accepted `Vec<Box<u64>, 2>`; courier's bounded Vec needs IPC-safe elements.
#[derive(courier::Ipc)]
#[repr(C)]
struct VecOfBox {
    items: courier::flat::Vec<Box<u64>, 2>,
}

fn main() {}
