#[derive(courier::Ipc)]
struct NoRepr {
    value: u32,
}

#[derive(courier::Ipc)]
enum NoReprEnum {
    A(u8),
}

fn main() {}
