#[derive(courier::Opcode)]
#[repr(u64)]
enum Op {
    Small = 1,
    Huge = 0x1_0000_0000,
}

#[derive(courier::Opcode)]
#[repr(i32)]
enum Negative {
    Minus = -1,
}

fn main() {}
