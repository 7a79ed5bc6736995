// A view cut from a received message borrows it: it cannot outlive the message, which gives
// its bytes back to the sender when it drops (the sender may then write a new message there).
fn main() {
    let ch = courier::shm::ShmChannel::connect("x", Default::default(), std::time::Duration::ZERO)
        .unwrap();
    let part = {
        let msg = ch.recv().unwrap();
        msg.slice(..1).unwrap()
    };
    let _ = part.get(0);
}
