def test_pricing_page_renders_in_the_layout(client):
    response = client.get("/pricing")
    assert response.status_code == 200
    assert b'name="csrf-token"' in response.data


def test_healthz_reports_database_and_rate_limit_storage(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "rate_limit_storage": "ok"}
