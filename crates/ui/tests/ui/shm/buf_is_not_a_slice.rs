// A lendable buffer may be mapped by a server: its bytes are reached through views.
fn bytes(b: &courier::shm::ShmBuf) -> &[u8] {
    b
}

fn main() {}
