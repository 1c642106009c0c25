"""Pack buyers and models (issue 10.8): the catalog names the models pack credits
unlock (Standard and HD by default; Pro stays Premium's), a customer who bought a
pack may use them, and the pricing page and the generator say who gets what."""

from billing_site.catalog import DEFAULT_CATALOG, build_catalog
from billing_site.extensions import db
from billing_site.models import Generation, User
from tests.conftest import csrf_token_from, post_json
from tests.factories import logged_in, make_customer, make_order, make_paid_order


def token(client) -> str:
    return csrf_token_from(client.get("/generate").get_data(as_text=True))


def generate(client, model: str):
    return post_json(client, "/api/v1/generations", {"prompt": "a lighthouse", "model": model})


def test_the_catalog_names_the_pack_models_and_an_operator_can_change_them():
    assert build_catalog(DEFAULT_CATALOG).pack_models == ("standard", "hd")
    custom = build_catalog({**DEFAULT_CATALOG, "pack_models": ["standard"]})
    assert custom.models_of_pack(custom.pack("pro")) == ("standard",)


def test_a_pack_buyer_on_the_free_plan_may_use_hd_but_not_pro(app, client):
    user_id = make_customer(app)
    with app.app_context():
        make_paid_order(db.session.get(User, user_id), "starter")
    logged_in(client, app, user_id)

    assert generate(client, "hd").status_code == 201
    refused = generate(client, "pro")
    assert (refused.status_code, refused.json["error"]) == (403, "model_not_in_tier")
    page = client.get("/generate").get_data(as_text=True)
    assert "with Basic, Premium and credit packs" in page
    with app.app_context():
        assert [g.model for g in db.session.query(Generation)] == ["hd"]


def test_an_unpaid_or_refunded_pack_unlocks_nothing(app, client):
    user_id = make_customer(app)
    with app.app_context():
        user = db.session.get(User, user_id)
        make_order(user, "pro")  # pending
        make_order(user, "pro", status="refunded")
    logged_in(client, app, user_id)

    assert generate(client, "hd").status_code == 403


def test_the_pricing_page_says_what_each_pack_unlocks(client):
    html = client.get("/pricing").get_data(as_text=True)
    pack_card = html[html.index('id="pack-pro"') :]
    pack_card = pack_card[: pack_card.index("</article>")]
    assert "Unlocks" in pack_card and ">Standard<" in pack_card and ">HD<" in pack_card
    assert ">Pro<" not in pack_card
