import asyncio

from tests.conftest import token_for
from tests.live import Client
from tests.stored import stored_text


def test_two_clients_converge_on_seed_example(server, make_user, make_document):
    ada = make_user("ada")
    bob = make_user("bob")
    document = make_document(ada, members=[(bob, "editor")])

    async def scenario():
        a = await Client.connect(server.ws_url, document.pk, token_for(ada), "a")
        b = await Client.connect(server.ws_url, document.pk, token_for(bob), "b")
        await a.expect("document_state")
        await b.expect("document_state")
        await a.edit([{"insert": "Hello"}], 0)
        ack_a = await a.expect("operation_ack")
        await b.edit([{"insert": "World"}], 0)
        remote_b = await b.expect("document_edit")
        ack_b = await b.expect("operation_ack")
        remote_a = await a.expect("document_edit")
        await a.close()
        await b.close()
        return ack_a, remote_b, ack_b, remote_a

    ack_a, remote_b, ack_b, remote_a = asyncio.run(scenario())
    assert ack_a["data"]["version"] == 0
    assert remote_b["data"]["operation"] == {"ops": [{"insert": "Hello"}]}
    assert ack_b["data"]["version"] == 1
    assert remote_a["data"]["operation"] == {
        "ops": [{"retain": 5}, {"insert": "World"}]
    }
    document.refresh_from_db()
    assert stored_text(document.pk) == "HelloWorld"
    assert document.version == 2
