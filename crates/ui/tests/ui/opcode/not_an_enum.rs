#[derive(courier::Opcode)]
struct Op(u32);

fn main() {}
